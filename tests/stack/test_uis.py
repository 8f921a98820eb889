"""What data engineers, ML engineers and on-call open: the Airflow UI (the four DAGs, their docs, a successful run
of each), the MLflow UI (two training runs compared, the champion alias) and the Evidently UI dashboard — in
headless Chromium (Debian's), with a screenshot of each saved under test-artifacts/screenshots/."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.conftest import _service_missing
from tests.stack.pipeline import DAGS, TRAINING

pytestmark = [pytest.mark.slow, pytest.mark.stack]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page():
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        _service_missing("chromium", "Debian's chromium is not installed (make chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(30_000)
        yield context.new_page()
        browser.close()


def test_airflow_ui_shows_the_four_dags_with_docs_and_successful_runs(stack_up, observed, page, screenshots):
    from playwright.sync_api import expect

    page.goto(stack_up.airflow_url)
    page.locator("input[name=username]").fill("admin")
    page.locator("input[name=password]").fill(stack_up.admin_password)
    page.get_by_role("button", name=re.compile("sign in", re.I)).click()
    # The sign-in redirects: navigating before it lands aborts one of the two (net::ERR_ABORTED, seen in CI).
    expect(page).not_to_have_url(re.compile("login", re.I))
    page.goto(f"{stack_up.airflow_url}/dags")
    expect(page.get_by_text(re.compile(r"\b5 Dags\b", re.I))).to_be_visible()
    for dag_id in DAGS:
        expect(page.get_by_role("link", name=dag_id, exact=True).first).to_be_visible()
    page.screenshot(path=screenshots / "airflow-dags.png", full_page=True)
    for dag_id in DAGS:
        page.goto(f"{stack_up.airflow_url}/dags/{dag_id}/runs")
        expect(page.get_by_text("success").first).to_be_visible()
    # the DAG's docs (doc_md) open from its page
    page.goto(f"{stack_up.airflow_url}/dags/{TRAINING}")
    page.get_by_test_id("markdown-button").click()
    expect(page.get_by_text("Turns history into caps").first).to_be_visible()
    page.screenshot(path=screenshots / "airflow-training-docs.png")


def test_mlflow_ui_compares_two_training_runs_and_shows_the_champion(stack_up, observed, page, screenshots):
    from mlflow import MlflowClient
    from playwright.sync_api import expect

    client = MlflowClient(tracking_uri=stack_up.mlflow_url, registry_uri=stack_up.mlflow_url)
    versions = client.search_model_versions("name = 'freqcap-conversion'")
    runs = sorted({v.run_id for v in versions})[:2]
    experiment = client.get_run(runs[0]).info.experiment_id
    ids = ",".join(f'"{r}"' for r in runs)
    page.goto(f'{stack_up.mlflow_url}/#/compare-runs?runs=[{ids}]&experiments=["{experiment}"]')
    for r in runs:
        expect(page.get_by_text(r).first).to_be_visible()
    page.screenshot(path=screenshots / "mlflow-compare-runs.png", full_page=True)
    page.goto(f"{stack_up.mlflow_url}/#/models/freqcap-conversion")
    expect(page.get_by_role("status", name="champion").first).to_be_visible()  # the alias, shown as "@ champion"
    page.screenshot(path=screenshots / "mlflow-model-champion.png", full_page=True)


def test_evidently_ui_shows_the_monitoring_dashboard(stack_up, observed, page, screenshots):
    import httpx
    from playwright.sync_api import expect

    projects = httpx.get(f"{stack_up.evidently_url}/api/projects", timeout=10).json()
    (project,) = [p for p in projects if p["name"] == "freqcap"]
    page.goto(f"{stack_up.evidently_url}/projects/{project['id']}")
    expect(page.get_by_text("freqcap").first).to_be_visible()
    # panels of the packaged dashboard (resources/monitoring/dashboard.yaml), filled by the monitoring run
    for panel in ("Open alarms", "Fail-open rate", "Decisions logged per window", "Stream lag (seconds)"):
        expect(page.get_by_role("heading", name=panel, exact=True).first).to_be_visible()
    page.screenshot(path=screenshots / "evidently-dashboard.png", full_page=True)
