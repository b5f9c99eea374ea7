"""Ranger policies: documents built and checked with the official client's model classes, and
applied idempotently through the client against a mock of Ranger's admin REST API."""

from __future__ import annotations

import copy
import importlib.util
import json
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


def test_policy_documents_build_with_the_client_model_classes():
    loaded = policies()
    assert all(isinstance(p, RangerPolicy) for p in loaded)
    by_type = {t: [p for p in loaded if p.policyType == t] for t in (0, 1, 2)}
    access = {p.resources["database"].values[0]: p for p in by_type[0]}
    assert {"sensorpipe_raw", "sensorpipe_agg"} <= set(access)
    raw_roles = {r for item in access["sensorpipe_raw"].policyItems for r in item.roles}
    assert {"sensorpipe_jobs", "data_scientists", "data_engineers"} <= raw_roles
    filters = {
        (p.resources["table"].values[0], i.rowFilterInfo.filterExpr)
        for p in by_type[2]
        for i in p.rowFilterPolicyItems
    }
    assert ("patient_profile", "facility_id = 'F01'") in filters
    masked = {c for p in by_type[1] for c in p.resources["column"].values}
    assert {"ssn", "first_name", "last_name", "address", "phone", "birth_date", "mrn"} <= masked


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["dataMaskPolicyItems"][0]["dataMaskInfo"].update(dataMaskType="SHOW_ALL"),
         "dataMaskType must be one of"),
        (lambda d: d["dataMaskPolicyItems"][0].update(roles=[]), "grants nobody"),
        (lambda d: d.update(policyType=7), "policyType must be one of"),
        (lambda d: d["resources"]["column"].update(values=[]), "resources must name values"),
    ],
)  # fmt: skip
def test_an_invalid_policy_is_refused_naming_it(tmp_path, change, message):
    doc = json.loads((ROOT / "conf/ranger/phi-masks.json").read_text())
    bad = copy.deepcopy(doc)
    change(bad["policies"][0])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ranger_policies.PolicyError, match=f"policy 'mask ssn'.*{message}"):
        ranger_policies.load_policies(tmp_path)


def test_policies_are_created_then_a_second_run_changes_nothing_ranger_rest_mock():
    with RangerAdminMock(password=PASSWORD) as ranger:
        client = RangerClient(ranger.url, ("admin", PASSWORD))
        first = ranger_policies.apply_policies(client, policies())
        assert {o.action for o in first} == {"created"}
        assert len(ranger.policies) == len(first) == 9
        assert [m for m, _ in ranger.writes()] == ["POST"] * 9
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
        for path in (ROOT / "conf/ranger").glob("*.json"):
            (tmp_path / path.name).write_text(path.read_text().replace("'F02'", "'F02-EAST'"))
        outcomes = ranger_policies.apply_policies(client, ranger_policies.load_policies(tmp_path))
        updated = [o for o in outcomes if o.action == "updated"]
        assert {o.name for o in updated} == {
            "patient profile by facility",
            "encounters by facility",
        }
        assert sorted(ranger.writes()) == sorted(
            ("PUT", f"/service/public/v2/api/policy/{o.policy_id}") for o in updated
        )
        stored = ranger.policies[updated[0].policy_id]
        assert stored["version"] == 2
        assert "facility_id = 'F02-EAST'" in json.dumps(stored)


def test_command_dry_run_and_wrong_password_ranger_rest_mock(monkeypatch, capsys):
    with RangerAdminMock(password=PASSWORD) as ranger:
        monkeypatch.setenv("RANGER_ADMIN_PASSWORD", PASSWORD)
        assert ranger_policies.main(["--url", ranger.url, "--dry-run"]) == 0
        assert capsys.readouterr().out.count("would create") == 9
        assert ranger.writes() == []
        monkeypatch.setenv("RANGER_ADMIN_PASSWORD", "wrong")
        assert ranger_policies.main(["--url", ranger.url]) == 1
        assert "HTTP 401" in capsys.readouterr().err
        with pytest.raises(RangerServiceException):
            RangerClient(ranger.url, ("admin", "wrong")).get_policy("sensorpipe-hive", "x")
