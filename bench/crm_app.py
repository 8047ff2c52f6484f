"""The test CRM (authserver.testing.crm) as its own gunicorn app, which keeps connections alive
(werkzeug's server closes every one): `bench_gateway.py --platform gunicorn`.

    gunicorn -c gunicorn.conf.py -w 1 'bench.crm_app:build()'

One worker only: the CRM keeps its clients and tokens in memory. BENCH_CRM_URL is its own base
URL; BENCH_CRM_CLIENT_ID, BENCH_CRM_SECRET and BENCH_CRM_REDIRECT register authserver with it.
"""

from __future__ import annotations

import os
from typing import Any

from authserver.testing.crm import create_crm


def build() -> Any:
    crm = create_crm()
    crm.configure_base_url(os.environ["BENCH_CRM_URL"])
    crm.register_client(os.environ["BENCH_CRM_CLIENT_ID"], os.environ["BENCH_CRM_SECRET"],
                        [os.environ["BENCH_CRM_REDIRECT"]])
    return crm.app
