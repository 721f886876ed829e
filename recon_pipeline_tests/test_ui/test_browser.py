"""The Dagster UI on a live `dagster dev`, driven with Chromium (Playwright).

One `dagster dev` serves the whole module: a fresh DAGSTER_HOME with the CLI's instance config,
the scenario community in a fresh SQLite membership database and in the Stripe and Discord
emulators (threads of this process, on loopback). Each test checks what the page shows; runs,
sensor ticks and backfills are waited for by polling with a deadline, never by fixed sleeps.

The tests share the module's instance, so later ones build on earlier ones through module
fixtures: `launched_run` is the fixing run launched from the launchpad, `verification_run` the
run the sensor launches after it, `past_days_backfill` the recomputation of the three days
before. Screenshots go to `artifacts/` next to this file; with RECON_UI_UPDATE_DOC_IMAGES=1 the
ones in `DOC_SHOTS` are also copied to `docs/images/`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

from recon_pipeline.cli import _INSTANCE_YAML
from recon_pipeline.clients.membership_db import parse_database_url, read_run_record
from recon_pipeline.defs.partitions import local_day
from recon_pipeline.defs.resources import open_frame_store
from recon_pipeline.domain.provenance import sources_of
from recon_pipeline.sandbox.demo import Sandbox, running_sandbox, seed_membership_db
from recon_pipeline.sandbox.server import free_port
from recon_pipeline_tests.processes import start, stop, wait_for, wait_until_loaded
from recon_pipeline_tests.scenario import (
    EXPECTED_ISSUES,
    RECONCILIATION_ASSETS,
    REPORT_ONLY,
    ROLE_CHANGES,
    scenario_community,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DOC_IMAGES = ROOT / "docs" / "images"
# artifact name -> README image, copied when RECON_UI_UPDATE_DOC_IMAGES=1
DOC_SHOTS = {
    "01-asset-lineage": "ui-lineage.png",
    "04-drift-issues-materialization": "ui-drift-issues.png",
    "05-verification-report": "ui-verification.png",
    "08-drift-issues-plots-by-event": "ui-drift-plots.png",
}

TIMEZONE = "America/New_York"
LOCATION = "recon_pipeline"
REPOSITORY = "__repository__"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
VIEWPORT = {"width": 1400, "height": 900}
PLOTS_VIEWPORT = {"width": 1400, "height": 1300}  # five rows of plots under their toggles
SNAPSHOT_FRAMES = (
    "membership_members",
    "membership_teams",
    "stripe_subscriptions",
    "discord_roles",
    "discord_member_roles",
)
RECOMPUTED_ASSETS = ("drift_issues", "reconciliation_fixes", "reconciliation_run")
# Numeric metadata drift_issues records on every run, each a series over the days in the UI's
# Plots view (spelled out, not read from the code): a count per drift type, per severity and
# per age, and the run's totals.
TYPE_SERIES = {
    "type_missing_access": "MISSING_ACCESS",
    "type_unauthorized_access": "UNAUTHORIZED_ACCESS",
    "type_role_mismatch": "ROLE_MISMATCH",
    "type_debtor_mismatch": "DEBTOR_MISMATCH",
    "type_orphaned_access": "ORPHANED_ACCESS",
    "type_not_in_guild": "NOT_IN_GUILD",
    "type_stale_database_status": "STALE_DATABASE_STATUS",
}
SEVERITY_SERIES = ("severity_high", "severity_medium", "severity_low")
AGE_SERIES = ("new", "persisting")
TOTAL_SERIES = (
    "dagster/row_count",
    "high_severity",
    "resolved_since_previous_run",
)
HIGH_SEVERITY = 5  # of EXPECTED_ISSUES (by_severity says "HIGH": 5)
FIXED = len(EXPECTED_ISSUES - REPORT_ONLY)
FIX_CONFIG_YAML = "ops:\n  reconciliation_fixes:\n    config:\n      auto_fix: true\n"
RUN_PAGE_URL = re.compile(r"/runs/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")

# Deadlines (seconds, or ms for Playwright). Measured on a 2-core box: ready after ~5 s, the
# fixing run ~20 s, the verification run ~15 s after it, a 3-day backfill 35-60 s (the backfill
# daemon wakes every 30 s).
READY_S = 120
RUN_S = 150
VERIFY_S = 90
TICKS_S = 60
BACKFILL_S = 240
UI_MS = 30_000
RUN_MS = RUN_S * 1000

RUN_TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
BACKFILL_TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

T = TypeVar("T")


# --- dagster dev ---------------------------------------------------------------------------------

_RUN_FIELDS = "runId jobName status creationTime startTime endTime tags { key value }"
_RUN = f"""
query($id: ID!) {{
  runOrError(runId: $id) {{ __typename ... on Run {{ {_RUN_FIELDS} }} }}
}}"""
_RUNS = f"""
query($filter: RunsFilter!) {{
  runsOrError(filter: $filter) {{ __typename ... on Runs {{ results {{ {_RUN_FIELDS} }} }} }}
}}"""
_LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}"""
_LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidSubsetError { message }
  }
}"""
_BACKFILL = f"""
query($id: String!) {{
  partitionBackfillOrError(backfillId: $id) {{
    __typename
    ... on PartitionBackfill {{ status runs {{ {_RUN_FIELDS} }} }}
  }}
}}"""
_MATERIALIZATIONS = """
query($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset { assetMaterializations(limit: 1000) { partition timestamp } }
  }
}"""
_SENSOR_TICKS = """
query($sensor: SensorSelector!) {
  sensorOrError(sensorSelector: $sensor) {
    __typename
    ... on Sensor { sensorState { ticks(limit: 200) { tickId status timestamp runIds } } }
  }
}"""


@dataclass
class DagsterDev:
    """`dagster dev` on loopback, the sandbox behind it and the membership database."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    database_url: str
    sandbox: Sandbox
    http: httpx.Client

    def gql(self, query: str, **variables: Any) -> dict[str, Any]:
        """The `data` of a GraphQL request to the webserver (the API the UI itself uses)."""
        response = self.http.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables}
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def run(self, run_id: str) -> dict[str, Any]:
        result = self.gql(_RUN, id=run_id)["runOrError"]
        assert result["__typename"] == "Run", result
        return _with_tag_dict(result)

    def runs(self, job_name: str, tags: dict[str, str] | None = None) -> list[dict[str, Any]]:
        run_filter = {
            "pipelineName": job_name,
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        result = self.gql(_RUNS, filter=run_filter)["runsOrError"]
        assert result["__typename"] == "Runs", result
        return [_with_tag_dict(r) for r in result["results"]]

    def wait_for_run(self, run_id: str, timeout_s: float = RUN_S) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["status"] in RUN_TERMINAL else None

        return wait_for(f"run {run_id} to finish", finished, timeout_s)

    def launch(
        self, job_name: str, *, partition: str, asset_selection: list[str] | None = None
    ) -> str:
        selector: dict[str, Any] = {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "jobName": job_name,
        }
        if asset_selection:
            selector["assetSelection"] = [{"path": [name]} for name in asset_selection]
        params = {
            "selector": selector,
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        }
        result = self.gql(_LAUNCH_RUN, params=params)["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def materializations(self, asset: str) -> list[dict[str, Any]]:
        """The asset's materializations: `partition` and `timestamp` (ms, a string)."""
        result = self.gql(_MATERIALIZATIONS, key={"path": [asset]})["assetOrError"]
        assert result["__typename"] == "Asset", result
        return result["assetMaterializations"]

    def sensor_ticks(self, sensor_name: str) -> list[dict[str, Any]]:
        selector = {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "sensorName": sensor_name,
        }
        result = self.gql(_SENSOR_TICKS, sensor=selector)["sensorOrError"]
        assert result["__typename"] == "Sensor", result
        return result["sensorState"]["ticks"]

    @contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        engine = parse_database_url(self.database_url).create_engine()
        try:
            with engine.begin() as conn:
                yield conn
        finally:
            engine.dispose()

    def emulator_traffic(self) -> tuple[int, int, int]:
        """Requests Stripe and Discord received so far, and Discord role changes."""
        return (
            len(self.sandbox.stripe.requests),
            len(self.sandbox.discord.requests),
            len(self.sandbox.discord.mutations),
        )


def _with_tag_dict(run: dict[str, Any]) -> dict[str, Any]:
    return {**run, "tags": {t["key"]: t["value"] for t in run["tags"]}}


@pytest.fixture(scope="module")
def dagster_dev(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[DagsterDev]:
    tmp = tmp_path_factory.mktemp("ui")
    database_url = f"sqlite:///{tmp / 'membership.sqlite3'}"
    community = scenario_community()
    engine = parse_database_url(database_url).create_engine()
    try:
        seed_membership_db(engine, community)
    finally:
        engine.dispose()
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(_INSTANCE_YAML)
    failed_before = request.session.testsfailed

    with ExitStack() as stack:
        sandbox = stack.enter_context(running_sandbox(community))
        port = free_port()
        env = {
            **os.environ,
            **sandbox.env(),
            "DAGSTER_HOME": str(home),
            "DATABASE_URL": database_url,
            "RECONCILIATION_VERIFY_DELAY_MINUTES": "0.1",  # 6 s
            "RECONCILIATION_TIMEZONE": TIMEZONE,
            # The first fixing run makes every fix, removals included (confirmation has tests
            # of its own).
            "RECONCILIATION_CONFIRM_REMOVALS": "false",
        }
        log_path = tmp / "dagster-dev.log"
        # cwd: workspace.yaml / pyproject.toml name the code location
        process = start(
            [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT,
            env=env,
            log_path=log_path,
        )
        stack.callback(stop, process)
        http = stack.enter_context(httpx.Client(timeout=30))
        dev = DagsterDev(f"http://127.0.0.1:{port}", process, log_path, database_url, sandbox, http)
        try:
            wait_until_loaded(dev.url, [process], READY_S)
        except AssertionError as exc:
            tail = dev.log_tail()
            raise AssertionError(f"{exc}\n--- dagster dev log (tail) ---\n{tail}") from None
        # The "Join the Dagster community" dialog, shown once per instance on localhost, covers
        # the page; this is the mutation its Skip button sends.
        dev.gql("mutation { setNuxSeen }")
        yield dev
        if request.session.testsfailed > failed_before:
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_sep("-", f"dagster dev log (tail of {log_path})")
                reporter.write_line(dev.log_tail())


# --- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Every `expect` here waits up to UI_MS (Playwright's default is 5 s, short for a busy CI).
    expect.set_options(timeout=UI_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
            expect.set_options(timeout=5_000)


def _new_context(browser: Browser, dev: DagsterDev) -> BrowserContext:
    context = browser.new_context(viewport=VIEWPORT, timezone_id=TIMEZONE, base_url=dev.url)
    context.set_default_timeout(UI_MS)
    return context


@pytest.fixture
def page(browser: Browser, dagster_dev: DagsterDev) -> Iterator[Page]:
    context = _new_context(browser, dagster_dev)
    try:
        yield context.new_page()
    finally:
        context.close()


_LOADING = "[class*='Spinner_spinner']:visible, [class*='Skeleton_skeleton']:visible"


def shoot(page: Page, name: str) -> Path:
    """Save a screenshot to artifacts/ (and to docs/images/ for the README ones, on request)."""
    # Whatever the page still loads (spinners, skeleton placeholders) has arrived first.
    expect(page.locator(_LOADING)).to_have_count(0)
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    if name in DOC_SHOTS and os.environ.get("RECON_UI_UPDATE_DOC_IMAGES") == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_IMAGES / DOC_SHOTS[name])
    return path


# --- the fixing run and its verification --------------------------------------------------------


@dataclass
class LaunchedRun:
    run_id: str
    partition: str
    page: Page  # left on the run's page right after the launch


@pytest.fixture(scope="module")
def launched_run(browser: Browser, dagster_dev: DagsterDev) -> Iterator[LaunchedRun]:
    """reconciliation_job launched from its launchpad: today's partition, auto_fix on."""
    today = local_day(TIMEZONE)
    context = _new_context(browser, dagster_dev)
    try:
        page = context.new_page()
        page.goto(f"/locations/{LOCATION}/jobs/reconciliation_job/playground")
        page.get_by_placeholder("Partition").fill(today)
        page.get_by_role("menuitem", name=today, exact=True).click()
        # Choosing a partition reloads the launchpad's config and tags for it; its tag showing
        # up means the reload is done, so the editor is not overwritten after it is changed.
        expect(page.get_by_text(f"partition: {today}", exact=True)).to_be_visible()
        page.locator(".CodeMirror").click()
        page.keyboard.press("Control+a")
        page.keyboard.insert_text(FIX_CONFIG_YAML)  # typed text would be auto-indented
        expect(page.locator(".CodeMirror-code")).to_contain_text("auto_fix: true")
        expect(page.get_by_text("No errors", exact=True)).to_be_visible()
        launch = page.get_by_role("button", name="Launch Run")
        expect(launch).to_be_enabled()  # once the launchpad has validated the config
        shoot(page, "03-launchpad")
        launch.click()
        page.wait_for_url(RUN_PAGE_URL)
        match = RUN_PAGE_URL.search(page.url)
        assert match, page.url
        yield LaunchedRun(match.group(1), today, page)
    finally:
        context.close()


@pytest.fixture(scope="module")
def fixed_run(launched_run: LaunchedRun, dagster_dev: DagsterDev) -> str:
    """The launched run's id, once it has succeeded."""
    run = dagster_dev.wait_for_run(launched_run.run_id)
    assert run["status"] == "SUCCESS", run
    return launched_run.run_id


@pytest.fixture(scope="module")
def verification_run(fixed_run: str, dagster_dev: DagsterDev) -> dict[str, Any]:
    """The verification_job run the sensor launches for the fixing run, once it finished."""

    def finished() -> list[dict[str, Any]] | None:
        runs = dagster_dev.runs("verification_job", {"recon/parent_run_id": fixed_run})
        return runs if runs and all(r["status"] in RUN_TERMINAL for r in runs) else None

    runs = wait_for(f"verification_sensor to verify run {fixed_run}", finished, VERIFY_S)
    assert len(runs) == 1, runs
    return runs[0]


@dataclass
class PastDaysBackfill:
    backfill_id: str
    days: list[str]  # the three days before today, oldest first
    backfill: dict[str, Any]  # as GraphQL reports it once finished
    traffic_before: tuple[int, int, int]  # emulator_traffic() at its launch
    traffic_after: tuple[int, int, int]  # ... and once it finished


@pytest.fixture(scope="module")
def past_days_backfill(
    dagster_dev: DagsterDev, fixed_run: str, verification_run: dict[str, Any]
) -> PastDaysBackfill:
    """A backfill of the assets downstream of the snapshots over the three days before today,
    launched as the UI does and finished (whatever its outcome)."""
    # verification_run: the sensor's run is over, so nothing else talks to the emulators now.
    today = dt.date.fromisoformat(local_day(TIMEZONE))
    days = [(today - dt.timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    # Copying today's stored snapshots to the three days before stands in for snapshots the
    # daily runs took on those days.
    with open_frame_store(dagster_dev.database_url, None) as store:
        for name in SNAPSHOT_FRAMES:
            frame = store.read(name, today.isoformat(), fixed_run)
            for day in days:
                store.write(name, day, f"daily-run-of-{day}", frame)
    traffic_before = dagster_dev.emulator_traffic()

    launched = dagster_dev.gql(
        _LAUNCH_BACKFILL,
        params={
            "assetSelection": [{"path": [name]} for name in RECOMPUTED_ASSETS],
            "partitionNames": days,
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def backfill_done() -> dict[str, Any] | None:
        backfill = dagster_dev.gql(_BACKFILL, id=backfill_id)["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        return backfill if backfill["status"] in BACKFILL_TERMINAL else None

    backfill = wait_for(f"backfill {backfill_id} to finish", backfill_done, BACKFILL_S, 2.0)
    return PastDaysBackfill(
        backfill_id, days, backfill, traffic_before, dagster_dev.emulator_traffic()
    )


def _verification_records(dev: DagsterDev, parent_run_id: str) -> list[str]:
    """Ids of the ReconciliationRun rows with isVerificationRun that verify `parent_run_id`."""
    with dev.connect() as conn:
        rows = conn.execute(
            sa.text(
                'SELECT r.id FROM "ReconciliationRun" r '
                "JOIN recon_pipeline_run p ON p.run_id = r.id "
                'WHERE r."isVerificationRun" AND p.parent_run_id = :parent'
            ),
            {"parent": parent_run_id},
        )
        return [row[0] for row in rows]


def _link(page: Page, text: str) -> Locator:
    """A link whose text is exactly `text` (its icons' names are part of its accessible name)."""
    return page.get_by_role("link").filter(has_text=re.compile(rf"^{re.escape(text)}$"))


# The Plots view of an asset's metadata draws a Chart.js line chart per numeric metadata key
# under a title that is the key, on a canvas with no text in it. This finds the chart titled
# `key` whose x axis is `axis` ("category": by partition, "time": by event) through the chart
# object React keeps for its canvas (react-chartjs-2 holds it in a ref), and returns the points
# Chart.js laid out and drew (a partition with no value is skipped, not drawn): each one's x (the
# partition key, or the time in ms) and value, whether it lies inside the plot area, and whether
# the canvas is painted in the line's colour (a blue, unlike the grey grid) where it is. Null
# until exactly one such chart exists.
_CHART_POINTS_JS = """
({key, axis}) => {
  const charts = [];
  for (const title of document.querySelectorAll('span')) {
    if (title.textContent !== key) continue;
    let box = title.parentElement;
    while (box && !box.querySelector('canvas')) box = box.parentElement;
    // the title's own plot: the first box around it with a canvas holds that one only
    const canvases = box ? box.querySelectorAll('canvas') : [];
    const canvas = canvases.length === 1 && canvases[0];
    const fiberKey = canvas && Object.keys(canvas).find((k) => k.startsWith('__reactFiber$'));
    for (let fiber = fiberKey && canvas[fiberKey]; fiber; fiber = fiber.return) {
      let chart = null;
      for (let hook = fiber.memoizedState; hook && typeof hook === 'object' && 'next' in hook;
           hook = hook.next) {
        const held = hook.memoizedState && hook.memoizedState.current;
        if (held && typeof held.getDatasetMeta === 'function') chart = held;
      }
      if (chart) {
        charts.push([canvas, chart]);
        break;
      }
    }
  }
  if (charts.length !== 1) return null;
  const [canvas, chart] = charts[0];
  if (!chart.chartArea || !chart.scales.x || chart.scales.x.type !== axis) return null;
  const area = chart.chartArea;
  const scale = canvas.width / canvas.clientWidth;
  const context = canvas.getContext('2d');
  const painted = (x, y) => {
    const r = 3 * scale;
    const rgba = context.getImageData(x * scale - r, y * scale - r, 2 * r, 2 * r).data;
    for (let i = 0; i < rgba.length; i += 4) {
      if (rgba[i + 3] > 0 && rgba[i + 2] - Math.max(rgba[i], rgba[i + 1]) > 60) return true;
    }
    return false;
  };
  const dataset = chart.data.datasets[0];
  const points = chart.getDatasetMeta(0).data.flatMap((point, i) => point.skip ? [] : [{
    x: axis === 'category' ? chart.data.labels[i] : dataset.data[i].x,
    y: dataset.data[i].y,
    inside: point.x >= area.left && point.x <= area.right
      && point.y >= area.top && point.y <= area.bottom,
    painted: painted(point.x, point.y),
  }]);
  return {label: dataset.label, points};
}
"""


def _plotted(page: Page, key: str, *, by_event: bool = False) -> list[tuple[Any, float]]:
    """The points drawn on the plot titled `key` (by partition, or by event), as (x, value)
    pairs in the axis' order, once the chart is there; each one inside the plot area and
    painted."""
    expect(page.get_by_text(key, exact=True)).to_be_visible()
    axis = "time" if by_event else "category"
    chart = page.wait_for_function(_CHART_POINTS_JS, arg={"key": key, "axis": axis}).json_value()
    assert chart["label"] == key, chart
    assert chart["points"], f"nothing is drawn on the plot of {key}"
    for point in chart["points"]:
        assert point["inside"] and point["painted"], (key, point)
    return [(point["x"], point["y"]) for point in chart["points"]]


# --- the tests -----------------------------------------------------------------------------------


def test_jobs_and_the_daily_schedule_are_listed(page: Page) -> None:
    page.goto("/jobs")
    for job in ("reconciliation_job", "verification_job"):
        expect(_link(page, job)).to_be_visible()
    shoot(page, "02-jobs")

    page.goto(f"/locations/{LOCATION}/schedules/daily_reconciliation")
    expect(page.get_by_text("0 3 * * *")).to_be_visible()  # shown as "(0 3 * * *)"
    expect(page.get_by_text("At 03:00 AM", exact=False).first).to_be_visible()
    expect(page.get_by_text("America/New_York", exact=True).first).to_be_visible()
    expect(_link(page, "reconciliation_job").first).to_be_visible()
    shoot(page, "02-schedule")


def test_launch_from_the_launchpad_fixes_and_succeeds(
    launched_run: LaunchedRun, dagster_dev: DagsterDev
) -> None:
    page = launched_run.page
    expect(page).to_have_title(re.compile(r"\[SUCCESS\]"), timeout=RUN_MS)
    expect(page.get_by_text("Success", exact=True).first).to_be_visible()
    expect(page.get_by_text(f"partition: {launched_run.partition}").first).to_be_visible()
    shoot(page, "03-run-success")

    run = dagster_dev.run(launched_run.run_id)
    assert run["status"] == "SUCCESS"
    assert run["jobName"] == "reconciliation_job"
    assert run["tags"]["dagster/partition"] == launched_run.partition
    assert run["tags"]["recon/auto_fix"] == "true"  # the config typed in the editor applied
    assert run["tags"]["recon/issues_fixed"] == str(FIXED)
    assert len(dagster_dev.sandbox.discord.mutations) == ROLE_CHANGES
    with dagster_dev.connect() as conn:
        record = read_run_record(conn, launched_run.run_id)
    assert record is not None
    assert (record["issuesFound"], record["issuesFixed"]) == (len(EXPECTED_ISSUES), FIXED)
    assert record["autoFixEnabled"] is True


def test_drift_issues_materialization_shows_counts_preview_and_schema(
    page: Page, fixed_run: str
) -> None:
    page.goto("/assets/drift_issues")
    for key in ("by_type", "by_severity", "preview"):
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    expect(page.get_by_text('"STALE_DATABASE_STATUS": 2').first).to_be_visible()
    expect(page.get_by_text('"HIGH": 5').first).to_be_visible()
    # the column schema
    expect(page.get_by_text("Column name", exact=True)).to_be_visible()
    for column in ("severity", "roles_to_add", "roles_to_remove", "status_fix"):
        expect(page.get_by_text(column, exact=True).first).to_be_visible()
    expect(page.get_by_text("MISSING_ACCESS, UNAUTHORIZED_ACCESS", exact=False)).to_be_visible()
    shoot(page, "04-drift-issues-overview")

    page.goto("/assets/drift_issues?view=events")
    expect(page.get_by_text(f"materialized in run {fixed_run[:8]}")).to_be_visible()
    for key in ("dagster/row_count", "by_type", "by_severity", "preview"):
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    expect(page.get_by_text('"UNAUTHORIZED_ACCESS": 2').first).to_be_visible()
    shoot(page, "04-drift-issues-materialization")

    # The preview is table metadata, shown in place: no click needed.
    expect(page.get_by_text("m_missing", exact=True).first).to_be_visible()
    expect(
        page.get_by_text("Stripe active but Discord has no member role (expected Lord)").first
    ).to_be_visible()
    shoot(page, "04-drift-issues-preview")


def test_sensor_verifies_the_fixing_run_exactly_once(
    page: Page, dagster_dev: DagsterDev, fixed_run: str, verification_run: dict[str, Any]
) -> None:
    parent = dagster_dev.run(fixed_run)
    run = verification_run
    assert run["status"] == "SUCCESS", dagster_dev.log_tail()
    assert run["creationTime"] - parent["endTime"] <= 60
    assert run["tags"]["dagster/sensor_name"] == "verification_sensor"
    assert run["tags"]["dagster/run_key"] == f"verify-{fixed_run}"

    page.goto(f"/runs/{run['runId']}")
    expect(page).to_have_title(re.compile(r"verification_job .*\[SUCCESS\]"))
    expect(page.get_by_text("verification_sensor").first).to_be_visible()
    shoot(page, "05-verification-run")

    page.goto("/assets/verification_report")
    summary = f"0 of {FIXED} fixed issues persist"
    expect(page.get_by_text(summary, exact=True).first).to_be_visible()
    expect(page.get_by_text(fixed_run, exact=True).first).to_be_visible()  # verified_run_id
    expect(page.get_by_text("None: every fix held.").first).to_be_visible()
    shoot(page, "05-verification-report")

    [record_id] = _verification_records(dagster_dev, fixed_run)
    assert record_id == run["runId"]

    # Further ticks must not launch a second verification of the same run.
    def two_more_ticks() -> list[dict[str, Any]] | None:
        ticks = dagster_dev.sensor_ticks("verification_sensor")
        later = [t for t in ticks if t["timestamp"] > run["endTime"]]
        return later if len(later) >= 2 else None

    later = wait_for("two more verification_sensor ticks", two_more_ticks, TICKS_S)
    assert all(not t["runIds"] for t in later), later
    assert len(dagster_dev.runs("verification_job", {"recon/parent_run_id": fixed_run})) == 1
    assert _verification_records(dagster_dev, fixed_run) == [run["runId"]]


def test_asset_lineage_shows_every_reconciliation_asset(page: Page, fixed_run: str) -> None:
    # After the fixing run, so the graph (and the README's screenshot) shows materialized assets.
    page.goto(f"/locations/{LOCATION}/asset-groups/membership_recon")
    for asset in RECONCILIATION_ASSETS:
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    # At the initial zoom the five snapshot assets are taller than the canvas: one step out
    # (names still in full) and a small pan bring the whole graph into view.
    page.get_by_role("button", name="zoom_out").click()
    page.mouse.move(1000, 300)  # an empty part of the canvas; the wheel pans the graph
    page.mouse.wheel(0, -40)
    for asset in RECONCILIATION_ASSETS:
        expect(page.get_by_text(asset, exact=True).first).to_be_in_viewport()
    shoot(page, "01-asset-lineage")


def test_backfill_recomputes_past_days_from_stored_snapshots(
    page: Page, dagster_dev: DagsterDev, fixed_run: str, past_days_backfill: PastDaysBackfill
) -> None:
    today = dt.date.fromisoformat(local_day(TIMEZONE))
    days = past_days_backfill.days
    backfill_id = past_days_backfill.backfill_id
    backfill = past_days_backfill.backfill

    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    # no Stripe or Discord call at all
    assert past_days_backfill.traffic_after == past_days_backfill.traffic_before
    runs = {r["tags"]["dagster/partition"]: r for r in map(_with_tag_dict, backfill["runs"])}
    assert sorted(runs) == days
    with dagster_dev.connect() as conn, open_frame_store(dagster_dev.database_url, None) as store:
        for day, run in runs.items():
            assert run["status"] == "SUCCESS", run
            assert "dagster/backfill" in run["tags"]
            recomputed = store.entries(day, names=list(RECOMPUTED_ASSETS))
            assert {(e.name, e.run_id) for e in recomputed} == {
                (name, run["runId"]) for name in RECOMPUTED_ASSETS
            }, day
            # ... from that day's snapshots, as its drift table says
            drift = store.read("drift_issues", day, run["runId"])
            assert {o.run_id for o in sources_of(drift)} == {f"daily-run-of-{day}"}
            record = read_run_record(conn, run["runId"])
            assert record is not None, day
            assert record["issuesFound"] == len(EXPECTED_ISSUES)
            assert record["issuesFixed"] == 0
            assert record["autoFixEnabled"] is False
            assert all(issue["outcome"] != "fixed" for issue in record["issues"]), record
        # today's frames are still the fixing run's
        assert store.latest_writer("drift_issues", today.isoformat()) == fixed_run

    page.goto("/overview/backfills")
    # The list is a virtualized table of divs: its row is the innermost element holding both
    # the backfill's link and its target.
    link = page.get_by_role("link", name=backfill_id)
    row = page.locator("div").filter(has=link).filter(has_text="3 partitions").last
    expect(row).to_be_visible()
    expect(row).to_contain_text("Success")
    expect(row).to_contain_text("drift_issues")
    shoot(page, "06-backfills")

    page.goto(f"/runs/b/{backfill_id}")
    expect(page.get_by_text("Succeeded", exact=True).first).to_be_visible()
    expect(page.get_by_text("100% completed")).to_have_count(len(RECOMPUTED_ASSETS))
    shoot(page, "06-backfill")


def test_drift_issues_plots_show_each_days_counts(
    page: Page, dagster_dev: DagsterDev, fixed_run: str, past_days_backfill: PastDaysBackfill
) -> None:
    # drift_issues was materialized for today by the fixing run and for the three days before
    # by the backfill: each series has a point on each of these four days and no other.
    assert past_days_backfill.backfill["status"] == "COMPLETED_SUCCESS", past_days_backfill
    today = local_day(TIMEZONE)
    days = [*past_days_backfill.days, today]
    issues = len(EXPECTED_ISSUES)
    by_type = Counter(kind for kind, _ in EXPECTED_ISSUES)

    page.set_viewport_size(PLOTS_VIEWPORT)
    page.goto("/assets/drift_issues")
    page.get_by_role("button", name="Plots").click()
    # A partitioned asset's plots are by partition, the first thing the view shows.
    expect(page.get_by_role("button", name="Partitions")).to_be_visible()
    for key in (*TYPE_SERIES, *SEVERITY_SERIES, *AGE_SERIES, *TOTAL_SERIES):
        expect(page.get_by_text(key, exact=True)).to_be_visible()

    for key, kind in TYPE_SERIES.items():
        assert _plotted(page, key) == [(day, by_type[kind]) for day in days], key
    severities = {key: dict(_plotted(page, key)) for key in SEVERITY_SERIES}
    ages = {key: dict(_plotted(page, key)) for key in AGE_SERIES}
    for series in (*severities.values(), *ages.values()):
        assert list(series) == days, series
    for day in days:
        assert severities["severity_high"][day] == HIGH_SEVERITY, severities
        assert sum(s[day] for s in severities.values()) == issues, (day, severities)
        assert ages["new"][day] + ages["persisting"][day] == issues, (day, ages)
    # The fixing run was the instance's first: every issue it found was new.
    assert (ages["new"][today], ages["persisting"][today]) == (issues, 0), ages
    assert _plotted(page, "dagster/row_count") == [(day, issues) for day in days]
    assert _plotted(page, "high_severity") == [(day, HIGH_SEVERITY) for day in days]

    # The plots start under the Metadata section's toggles.
    page.get_by_text("Metadata", exact=True).evaluate("e => e.scrollIntoView({block: 'start'})")
    expect(page.get_by_text("severity_high", exact=True)).to_be_in_viewport()
    shoot(page, "08-drift-issues-plots")

    # By event: a point per materialization, at its time.
    page.get_by_role("button", name="Events").click()
    materialized = dagster_dev.materializations("drift_issues")
    assert sorted(m["partition"] for m in materialized) == days  # once each
    by_event = _plotted(page, "dagster/row_count", by_event=True)
    assert sorted(x for x, _ in by_event) == sorted(int(m["timestamp"]) for m in materialized)
    assert {y for _, y in by_event} == {issues}
    shoot(page, "08-drift-issues-plots-by-event")


def test_snapshotting_a_past_day_fails_with_its_reason(page: Page, dagster_dev: DagsterDev) -> None:
    today = dt.date.fromisoformat(local_day(TIMEZONE))
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    traffic_before = dagster_dev.emulator_traffic()

    run_id = dagster_dev.launch(
        "reconciliation_job", partition=yesterday, asset_selection=["stripe_subscriptions"]
    )
    run = dagster_dev.wait_for_run(run_id)

    assert run["status"] == "FAILURE", run
    assert dagster_dev.emulator_traffic() == traffic_before
    page.goto(f"/runs/{run_id}")
    expect(page).to_have_title(re.compile(r"\[FAILURE\]"))
    expect(page.get_by_text(f"Cannot snapshot {yesterday}").first).to_be_visible()
    shoot(page, "07-past-day-refused")
    with dagster_dev.connect() as conn:
        record = read_run_record(conn, run_id)
    assert record is not None
    assert record["status"] == "failed"
    assert f"Cannot snapshot {yesterday}" in record["failure"]
