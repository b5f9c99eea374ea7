"""Ranger policies: documents built and checked with the official client's model classes, and
applied idempotently through the client against a mock of Ranger's admin REST API."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from apache_ranger.client.ranger_client import RangerClient
from apache_ranger.exceptions import RangerServiceException
from apache_ranger.model.ranger_policy import RangerPolicy

from tests.ranger_mock import RangerAdminMock

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "ranger_policies", ROOT / "bootstrap/ranger_policies.py"
)
ranger_policies = importlib.util.module_from_spec(_spec)
sys.modules["ranger_policies"] = ranger_policies  # dataclasses look their module up
_spec.loader.exec_module(ranger_policies)
PASSWORD = "rangerR0cks!"


def policies():
    return ranger_policies.load_policies(ROOT / "conf/ranger")


def test_every_policy_validates_against_aws_service_definitions():
    """Each policy is for a plugin the security configuration enables, and names resources
    and access types of that plugin's service definition (conf/ranger/servicedefs/)."""
    loaded = policies()
    assert all(isinstance(p, RangerPolicy) for p in loaded)
    services = ranger_policies.load_services(
        ROOT / "conf/ranger", ROOT / "conf/ranger/plugins.json"
    )
    assert {k: v.name for k, v in services.items()} == {
        "sensorpipe-spark": "amazon-emr-spark", "sensorpipe-emrfs": "amazon-emr-emrfs",
    }  # fmt: skip
    for policy in loaded:
        service = services[policy.service]
        assert policy.policyType == RangerPolicy.POLICY_TYPE_ACCESS
        assert frozenset(policy.resources) in service.hierarchies
        accesses = {a.type for item in policy.policyItems for a in item.accesses}
        assert accesses <= service.access_types, policy.name
    spark = services["sensorpipe-spark"]
    assert sorted(sorted(h) for h in spark.hierarchies) == [["column", "database", "table"],
                                                            ["url"]]  # fmt: skip
    assert spark.policy_types == {RangerPolicy.POLICY_TYPE_ACCESS}  # no masks, no row filters
    databases = {p.resources["database"].values[0]: p for p in loaded if "database" in p.resources}
    assert set(databases) == {"sensorpipe", "sensorpipe_phi"}
    phi_readers = {r for p in loaded if p.name == "hospital protected zone"
                   for item in p.policyItems for r in item.roles}  # fmt: skip
    assert phi_readers == {"sensorpipe_jobs", "clinicians", "phi_admins"}


def spark_policy() -> dict:
    doc = json.loads((ROOT / "conf/ranger/spark-access.json").read_text())
    return copy.deepcopy(doc)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(policyType=2, rowFilterPolicyItems=[{"roles": ["r"], "accesses": [
            {"type": "select"}], "rowFilterInfo": {"filterExpr": "facility_id = 'F01'"}}]),
         "amazon-emr-spark supports policy types \\[0\\] only"),
        (lambda d: d.update(policyType=1), "supports policy types"),
        (lambda d: d["policyItems"][0]["accesses"].append({"type": "index"}),
         "access type 'index' is not one of amazon-emr-spark's"),
        (lambda d: d["resources"].pop("column"), "not a resource hierarchy of amazon-emr-spark"),
        (lambda d: d["resources"].update(url={"values": ["s3://x/*"]}),
         "are not a resource hierarchy"),
        (lambda d: d.update(service="sensorpipe-hive"), "is no plugin's policy repository"),
        (lambda d: d["policyItems"][0].update(roles=[]), "grants nobody"),
        (lambda d: d.update(policyType=7), "policyType must be one of"),
        (lambda d: d["resources"]["column"].update(values=[]), "resources must name values"),
    ],
)  # fmt: skip
def test_an_invalid_policy_is_refused_naming_it(tmp_path, change, message):
    bad = spark_policy()
    change(bad["policies"][0])
    (tmp_path / "servicedefs").mkdir()
    for path in (ROOT / "conf/ranger/servicedefs").glob("*.json"):
        (tmp_path / "servicedefs" / path.name).write_text(path.read_text())
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    security = ROOT / "conf/ranger/plugins.json"
    with pytest.raises(ranger_policies.PolicyError, match=f"policy 'sensorpipe lake'.*{message}"):
        ranger_policies.load_policies(tmp_path, security)


def test_an_emrfs_policy_takes_s3_actions_not_table_ones(tmp_path):
    doc = json.loads((ROOT / "conf/ranger/emrfs-access.json").read_text())
    doc["policies"][0]["policyItems"][0]["accesses"] = [{"type": "select"}]
    (tmp_path / "servicedefs").mkdir()
    for path in (ROOT / "conf/ranger/servicedefs").glob("*.json"):
        (tmp_path / "servicedefs" / path.name).write_text(path.read_text())
    (tmp_path / "emrfs.json").write_text(json.dumps(doc))
    with pytest.raises(
        ranger_policies.PolicyError, match="'select' is not one of amazon-emr-emrfs"
    ):
        ranger_policies.load_policies(tmp_path, ROOT / "conf/ranger/plugins.json")


def test_policies_are_created_then_a_second_run_changes_nothing_ranger_rest_mock():
    with RangerAdminMock(password=PASSWORD) as ranger:
        client = RangerClient(ranger.url, ("admin", PASSWORD))
        first = ranger_policies.apply_policies(client, policies())
        assert {o.action for o in first} == {"created"}
        assert len(ranger.policies) == len(first) == 7
        assert [m for m, _ in ranger.writes()] == ["POST"] * 7
        ranger.requests.clear()
        second = ranger_policies.apply_policies(client, policies())
        assert {o.action for o in second} == {"unchanged"}
        assert ranger.writes() == []
        assert [o.policy_id for o in second] == [o.policy_id for o in first]


def test_a_changed_policy_is_updated_by_id_ranger_rest_mock(tmp_path):
    with RangerAdminMock(password=PASSWORD) as ranger:
        client = RangerClient(ranger.url, ("admin", PASSWORD))
        ranger_policies.apply_policies(client, policies())
        ranger.requests.clear()
        shutil.copytree(ROOT / "conf/ranger", tmp_path / "ranger")
        changed = tmp_path / "ranger/spark-access.json"
        changed.write_text(changed.read_text().replace('"phi_admins"', '"phi_officers"'))
        security = ROOT / "conf/ranger/plugins.json"
        outcomes = ranger_policies.apply_policies(
            client, ranger_policies.load_policies(tmp_path / "ranger", security)
        )
        updated = [o for o in outcomes if o.action == "updated"]
        assert {o.name for o in updated} == {"hospital protected zone"}
        assert sorted(ranger.writes()) == sorted(
            ("PUT", f"/service/public/v2/api/policy/{o.policy_id}") for o in updated
        )
        stored = ranger.policies[updated[0].policy_id]
        assert stored["version"] == 2
        assert "phi_officers" in json.dumps(stored)


def test_command_dry_run_and_wrong_password_ranger_rest_mock(monkeypatch, capsys):
    with RangerAdminMock(password=PASSWORD) as ranger:
        monkeypatch.setenv("RANGER_ADMIN_PASSWORD", PASSWORD)
        assert ranger_policies.main(["--url", ranger.url, "--dry-run"]) == 0
        assert capsys.readouterr().out.count("would create") == 7
        assert ranger.writes() == []
        monkeypatch.setenv("RANGER_ADMIN_PASSWORD", "wrong")
        assert ranger_policies.main(["--url", ranger.url]) == 1
        assert "HTTP 401" in capsys.readouterr().err
        with pytest.raises(RangerServiceException):
            RangerClient(ranger.url, ("admin", "wrong")).get_policy("sensorpipe-hive", "x")


def test_lake_formation_filters_do_what_the_spark_plugin_cannot_and_pass_the_model():
    """Row filters by facility and the hidden SSN, as Lake Formation data cells filters:
    valid CreateDataCellsFilter/GrantPermissions requests (botocore's lakeformation model) on
    tables and columns the hospital jobs register."""
    import botocore.session
    from botocore.validate import ParamValidator
    from sensorpipe.health.snapshot import PROFILE_COLUMNS
    from sensorpipe.health.tables import TABLES_BY_NAME

    model = botocore.session.get_session().get_service_model("lakeformation")
    text = (ROOT / "conf/lakeformation/data-cells-filters.json").read_text()
    doc = json.loads(text.replace("{{ACCOUNT_ID}}", "123456789012"))
    columns = {
        "patient_profile": set(PROFILE_COLUMNS),
        "encounters": set(TABLES_BY_NAME["clinical.encounters"].ddl().replace(",", " ").split()),
    }
    for operation, key in (("CreateDataCellsFilter", "TableData"), ("GrantPermissions", None)):
        shape = model.operation_model(operation).input_shape
        for request in doc[operation]:
            params = {key: request} if key else request
            report = ParamValidator().validate(params, shape)
            assert not report.has_errors(), report.generate_report()
    filters = doc["CreateDataCellsFilter"]
    for f in filters:
        assert f["DatabaseName"] == "sensorpipe_phi" and f["TableName"] in columns
        column = f["RowFilter"]["FilterExpression"].split()[0]
        assert column in columns[f["TableName"]]
        assert set(f["ColumnWildcard"]["ExcludedColumnNames"]) <= columns[f["TableName"]]
    assert {(f["TableName"], f["RowFilter"]["FilterExpression"]) for f in filters} >= {
        ("patient_profile", "facility_id = 'F01'"), ("encounters", "facility_id = 'F03'"),
    }  # fmt: skip
    names = {f["Name"] for f in filters}
    assert {g["Resource"]["DataCellsFilter"]["Name"] for g in doc["GrantPermissions"]} == names
