"""Run in its own process: a JVM (Spark's, with Hadoop's UserGroupInformation) started with
-Djava.security.krb5.conf=KRB5_CONF logs in from a keytab. Exit 0 and print the user, or
exit 1 and print why not.

    python tests/jvm_kerberos_login.py KRB5_CONF PRINCIPAL KEYTAB
"""

import sys

from pyspark import SparkConf
from pyspark.java_gateway import launch_gateway


def main() -> int:
    krb5_conf, principal, keytab = sys.argv[1:4]
    conf = SparkConf().set(
        "spark.driver.extraJavaOptions", f"-Djava.security.krb5.conf={krb5_conf}"
    )
    gateway = launch_gateway(conf)
    jvm = gateway.jvm
    print("krb5.conf:", jvm.java.lang.System.getProperty("java.security.krb5.conf"))
    hadoop_conf = jvm.org.apache.hadoop.conf.Configuration()
    hadoop_conf.set("hadoop.security.authentication", "kerberos")
    ugi_class = jvm.org.apache.hadoop.security.UserGroupInformation
    ugi_class.setConfiguration(hadoop_conf)
    try:
        ugi = ugi_class.loginUserFromKeytabAndReturnUGI(principal, keytab)
    except Exception as exc:  # noqa: BLE001 - the failure is the answer
        print("login failed:", str(exc).splitlines()[0])
        return 1
    print("logged in as", ugi.getUserName(), "kerberos:", ugi.hasKerberosCredentials())
    return 0


if __name__ == "__main__":
    sys.exit(main())
