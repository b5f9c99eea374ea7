"""Packaging for sensorpipe's tools (not shipped to the cluster): `pip install -e tools/`."""

from setuptools import find_packages, setup

setup(
    name="sensorpipe-tools",
    version="0.0.0",
    description="sensorpipe's developer and operator tools (CLI, deploy, local services, samples)",
    python_requires=">=3.11",
    packages=find_packages(include=["sensorpipe_tools", "sensorpipe_tools.*"]),
    package_data={"sensorpipe_tools": ["view_page/*"]},
    install_requires=["sensorpipe", "boto3", "PyYAML", "numpy", "pandas", "pyarrow"],
    entry_points={"console_scripts": ["sensorpipe=sensorpipe_tools.cli:main"]},
)
