// Loaded before kinesalite (node --require). A client killed mid-request (the SIGKILL tests,
// or a job stopped hard) aborts its request, and kinesalite rethrows the request's error
// (index.js: req.on('error', function(err) { throw err })), which ends the server for
// every later client. Kinesis itself carries on; so does this stand-in: the aborted request
// is logged and dropped, anything else still ends the process.
process.on('uncaughtException', (err) => {
  if (err && (err.message === 'aborted' || err.code === 'ECONNRESET')) {
    console.error(`kinesalite: a client went away mid-request (${err.message})`)
    return
  }
  console.error(err)
  process.exit(1)
})
