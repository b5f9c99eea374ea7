"""The AWS estate around sensorpipe's jobs, as an AWS CDK for Python app (see docs/estate.md).

A developer and operator tool: it is not part of the runtime package shipped to the cluster.
"""
