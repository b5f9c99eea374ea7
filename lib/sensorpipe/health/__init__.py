"""The hospital's data: synthetic sources, incremental JDBC import, patient snapshots."""
