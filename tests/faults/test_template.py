"""The fault suite's own set-up works: a copied site answers on the private PostgreSQL and Redis."""
import pytest

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_a_fault_site_is_a_working_copy_of_the_template(fault_site):
    out = fault_site.shell('import json\nfrom modelhub.models import ModelVersion\n'
                           'print("RESULT:" + json.dumps({"active": str(ModelVersion.objects.get(status="active").version)}))')
    assert out == {"active": "1.0"}, out
