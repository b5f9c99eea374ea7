"""Governance: Lake Formation over the catalog the jobs register their tables in.

- The lake's and the protected zone's locations registered with Lake Formation (its data access
  role reads them for the readers it authorises), in hybrid access mode: the jobs keep writing
  with their runtime roles' IAM permissions (docs/emr.md: runtime roles for writers, Lake
  Formation for readers), and a reader sees only what Lake Formation grants.
- The two catalog databases, so that grants can name them before the first job runs (the jobs'
  CREATE DATABASE IF NOT EXISTS then finds them).
- Grants: engineers, data scientists and analysts read the lake and the general zone
  (`sensorpipe`), never the protected one; clinicians may see the protected database, and its
  rows only through the data cells filters (second stack); each job's runtime role may create
  and alter tables in its databases and use its locations (the access contract's Glue part).

The data cells filters (conf/lakeformation/data-cells-filters.json) need their tables, which the
first batch day creates: they are a stack of their own, `<name>-governance-filters`, deployed
after it (docs/estate.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_glue as glue
from aws_cdk import aws_lakeformation as lf
from constructs import Construct

from sensorpipe_estate.access import GENERAL, HOSPITAL, settings_db
from sensorpipe_estate.common import Names
from sensorpipe_estate.settings import EstateSettings

FILTERS = Path(__file__).resolve().parents[2] / "conf/lakeformation/data-cells-filters.json"
READ = ["SELECT", "DESCRIBE"]
WRITE_TABLES = ["CREATE_TABLE", "ALTER", "DESCRIBE"]


def data_cells_filters(account: str) -> dict[str, Any]:
    """The filters and their grants, with this account filled in."""
    return json.loads(FILTERS.read_text().replace("{{ACCOUNT_ID}}", account))


class GovernanceStack(Stack):
    def __init__(self, scope: Construct, id_: str, settings: EstateSettings, **kwargs) -> None:  # noqa: ANN003
        super().__init__(scope, id_, **kwargs)
        names, gov, account = Names(settings), settings.governance, settings.account
        lake_db, phi_db = settings_db(settings), settings_db(settings, protected=True)
        lf.CfnDataLakeSettings(
            self, "Administrators",
            admins=[lf.CfnDataLakeSettings.DataLakePrincipalProperty(
                data_lake_principal_identifier=arn) for arn in gov.admin_role_arns],
        )  # fmt: skip
        locations = {
            "LakeLocation": f"arn:aws:s3:::{names.lake_bucket}/lake",
            "GeneralZoneLocation": f"arn:aws:s3:::{names.lake_bucket}/{GENERAL.rstrip('/')}",
            "ProtectedZoneLocation":
                f"arn:aws:s3:::{names.protected_bucket}/{HOSPITAL.rstrip('/')}",
        }
        registered = {}
        for id_, arn in locations.items():
            registered[id_] = lf.CfnResource(
                self, id_, resource_arn=arn, use_service_linked_role=False,
                role_arn=names.role_arn(names.lakeformation_role), hybrid_access_enabled=True,
            )  # fmt: skip
        databases = {}
        for id_, name, location in (
            ("LakeDatabase", lake_db, f"s3://{names.lake_bucket}/lake"),
            ("ProtectedDatabase", phi_db, f"s3://{names.protected_bucket}/hospital"),
        ):
            databases[name] = glue.CfnDatabase(
                self, id_, catalog_id=account,
                database_input=glue.CfnDatabase.DatabaseInputProperty(
                    name=name, location_uri=location),
            )  # fmt: skip

        def grant(id_: str, principal: str, permissions: list[str], **resource: Any) -> None:
            permission = lf.CfnPrincipalPermissions(
                self, id_, permissions=permissions, permissions_with_grant_option=[],
                principal=lf.CfnPrincipalPermissions.DataLakePrincipalProperty(
                    data_lake_principal_identifier=principal),
                resource=lf.CfnPrincipalPermissions.ResourceProperty(**resource),
            )  # fmt: skip
            for database in databases.values():
                permission.add_dependency(database)
            for location in registered.values():
                permission.add_dependency(location)

        def tables(database: str) -> lf.CfnPrincipalPermissions.TableResourceProperty:
            return lf.CfnPrincipalPermissions.TableResourceProperty(
                catalog_id=account, database_name=database, table_wildcard={})

        def database(name: str) -> lf.CfnPrincipalPermissions.DatabaseResourceProperty:
            return lf.CfnPrincipalPermissions.DatabaseResourceProperty(
                catalog_id=account, name=name)

        def location(id_: str) -> lf.CfnPrincipalPermissions.DataLocationResourceProperty:
            return lf.CfnPrincipalPermissions.DataLocationResourceProperty(
                catalog_id=account, resource_arn=locations[id_])

        # Readers: the lake and the general zone, nothing of the protected zone.
        for who, arn in (("Engineers", gov.engineers_role_arn),
                         ("DataScientists", gov.data_scientists_role_arn),
                         ("Analysts", gov.analysts_role_arn)):
            grant(f"{who}SeeTheLakeDatabase", arn, ["DESCRIBE"], database=database(lake_db))
            grant(f"{who}ReadTheLakeTables", arn, READ, table=tables(lake_db))
        # Clinicians: the protected database's tables by name; rows through the filters only.
        clinicians = sorted({g["Principal"]["DataLakePrincipalIdentifier"]
                             for g in data_cells_filters(account)["GrantPermissions"]})
        for i, arn in enumerate(clinicians):
            grant(f"Clinicians{i}SeeTheProtectedDatabase", arn, ["DESCRIBE"],
                  database=database(phi_db))
        # The jobs (runtime roles): their tables and locations, as the access contract needs.
        role = {f: names.role_arn(n) for f, n in (("Streaming", names.streaming_role),
                                                  ("Batch", names.batch_role),
                                                  ("Hospital", names.hospital_role))}
        for family, db, where in (("Streaming", lake_db, ["LakeLocation"]),
                                  ("Batch", lake_db, ["LakeLocation"]),
                                  ("Hospital", phi_db, ["ProtectedZoneLocation"]),
                                  ("Hospital", lake_db, ["GeneralZoneLocation"])):
            suffix = "Protected" if db == phi_db else "Lake"
            grant(f"{family}Tables{suffix}", role[family], WRITE_TABLES, database=database(db))
            for loc in where:
                grant(f"{family}Uses{loc}", role[family], ["DATA_LOCATION_ACCESS"],
                      data_location=location(loc))  # fmt: skip


class GovernanceFiltersStack(Stack):
    """The data cells filters of conf/lakeformation/data-cells-filters.json and the clinicians'
    grants on them: rows of their facility, the SSN column excluded."""

    def __init__(self, scope: Construct, id_: str, settings: EstateSettings, **kwargs) -> None:  # noqa: ANN003
        super().__init__(scope, id_, **kwargs)
        spec = data_cells_filters(settings.account)
        made = {}
        for f in spec["CreateDataCellsFilter"]:
            made[f["Name"]] = lf.CfnDataCellsFilter(
                self, _logical(f["Name"]), table_catalog_id=f["TableCatalogId"],
                database_name=f["DatabaseName"], table_name=f["TableName"], name=f["Name"],
                row_filter=lf.CfnDataCellsFilter.RowFilterProperty(
                    filter_expression=f["RowFilter"]["FilterExpression"]),
                column_wildcard=lf.CfnDataCellsFilter.ColumnWildcardProperty(
                    excluded_column_names=f["ColumnWildcard"]["ExcludedColumnNames"]),
            )  # fmt: skip
        for g in spec["GrantPermissions"]:
            target = g["Resource"]["DataCellsFilter"]
            permission = lf.CfnPrincipalPermissions(
                self, f"Grant{_logical(target['Name'])}", permissions=g["Permissions"],
                permissions_with_grant_option=[],
                principal=lf.CfnPrincipalPermissions.DataLakePrincipalProperty(
                    data_lake_principal_identifier=g["Principal"]["DataLakePrincipalIdentifier"]),
                resource=lf.CfnPrincipalPermissions.ResourceProperty(
                    data_cells_filter=lf.CfnPrincipalPermissions.DataCellsFilterResourceProperty(
                        table_catalog_id=target["TableCatalogId"],
                        database_name=target["DatabaseName"], table_name=target["TableName"],
                        name=target["Name"])),
            )  # fmt: skip
            permission.add_dependency(made[target["Name"]])


def _logical(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))
