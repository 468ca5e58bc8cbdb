"""Pages that stay fast as history grows: the same number of SQL queries with 5 or 500 versions,
runs, deployments and batches behind them."""
import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from modelhub.models import ModelVersion
from testing.builders import client_for, grow_history

PAGES = ["/", "/models/", "/models/1.0/", "/runs/", "/deployments/", "/data/", "/predict/", "/status/"]


def queries(client: Client) -> dict[str, int]:
    counts = {}
    for page in PAGES:
        client.get(page)  # warm: figures are built once per change, then read
        with CaptureQueriesContext(connection) as captured:
            response = client.get(page)
        assert response.status_code == 200, page
        counts[page] = len(captured)
    return counts


@pytest.mark.slow
def test_query_counts_do_not_grow_with_the_history(ready, users):
    client = client_for(users["engineer"])
    grow_history(5)
    small = queries(client)

    grow_history(495)
    large = queries(client)

    assert ModelVersion.objects.count() >= 500
    assert large == small, {page: (small[page], large[page]) for page in PAGES if small[page] != large[page]}
