"""sensorpipe's developer and operator tools: the `sensorpipe` command, deploy, local services,
samples, the synthetic hospital, the producer and plots.

A distribution of its own (tools/setup.py), installed in the development venv beside the runtime
package and never shipped to the cluster: the wheel, the --py-files zip and the dependency
archive hold only lib/sensorpipe (tests/test_packaging.py lists them)."""
