"""The built dashboard in headless Chromium (Debian's, driven by Playwright) against the real CL
server (``ServerRuntime``: waitress, the embedded Redis and store), with a history seeded
through the store layer (:mod:`dashboard_seed`).

Screenshots go to ``test-artifacts/dashboard/`` (``MODELCI_TEST_ARTIFACTS`` overrides the
root). The dashboard must be built first (``./run test`` builds it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import repo_root
from playwright import sync_api as playwright_api

from cl_server.api.routes.web import web_dist
from cl_server.auth import issue_token
from cl_server.store import MongoStore, User
from evaluator.dashboard_bench import LAUNCH_ARGS
from evaluator.dashboard_seed import Seeded, seeded_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@dataclass
class Live:
    url: str
    store: MongoStore
    seeded: Seeded
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if not (web_dist() / "index.html").is_file():
        pytest.fail("the dashboard is not built: `./run test` builds it (or `cd web && npm ci "
                    "&& npm run build`)")
    with seeded_server(tmp_path_factory.mktemp("dashboard")) as server:
        tokens = {}
        for role in ("viewer", "engineer"):
            server.store.add_user(User(name=f"{role}-1", role=role))
            tokens[role] = issue_token(server.store, f"{role}-1", "browser test")[1]
        yield Live(server.url, server.store, server.seeded, tokens)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=list(LAUNCH_ARGS))
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    root = Path(os.environ.get("MODELCI_TEST_ARTIFACTS", repo_root() / "test-artifacts"))
    folder = root / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def signed_in(browser: object, live: Live, role: str, viewport: dict[str, int] = DESKTOP,
              path: str = "") -> object:
    """A new page signed in with the role's token, then at ``#/path``."""
    context = browser.new_context(viewport=viewport)  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(live.url + "/")
    page.get_by_test_id("token-input").fill(live.tokens[role])
    page.get_by_test_id("sign-in").click()
    playwright_api.expect(page.get_by_test_id("whoami")).to_contain_text(role)
    if path:
        page.goto(f"{live.url}/#/{path}")
    return page


def expect(locator: object) -> object:
    return playwright_api.expect(locator)


def test_overview_lists_the_services(browser: object, live: Live, shots: Path) -> None:
    page = signed_in(browser, live, "viewer")
    rows = page.get_by_test_id("service-row")
    expect(rows).to_have_count(2)
    digits = page.locator("[data-testid=service-row][data-service=digits]")
    expect(digits.get_by_test_id("champion-version")).to_contain_text("4")
    expect(digits.get_by_test_id("service-state")).to_contain_text("healthy")
    expect(digits.get_by_test_id("accuracy")).to_contain_text("100")
    expect(digits.get_by_test_id("annotator-link")).to_have_attribute(
        "href", "http://127.0.0.1:8080/projects/3")
    text = page.locator("[data-testid=service-row][data-service=text]")
    expect(text.get_by_test_id("service-state")).to_contain_text("paused")
    page.screenshot(path=str(shots / "overview-1280x800.png"), full_page=True)
    assert live.tokens["viewer"] not in page.url
    page.context.close()


def test_phone_width_has_no_horizontal_overflow(browser: object, live: Live,
                                                shots: Path) -> None:
    for path, name in (("", "overview"), ("services/digits", "service"),
                       ("services/digits/versions/2", "card")):
        page = signed_in(browser, live, "viewer", PHONE, path)
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        page.screenshot(path=str(shots / f"{name}-390.png"), full_page=True)
        assert width <= PHONE["width"], f"{name}: page is {width} px wide at 390 px"
        page.context.close()


def test_model_card_shows_all_five_sections(browser: object, live: Live, shots: Path) -> None:
    page = signed_in(browser, live, "viewer", path="services/digits/versions/2")
    task = page.get_by_test_id("card-task")
    for text in ("nc", "ewc", "EWC penalty", "lambda", "100", "drift"):
        expect(task).to_contain_text(text)
    benchmark = page.get_by_test_id("card-benchmark")
    for text in ("97.0%", "50.0%", "96.5%", "-1.0", "+40.0", "12.5"):
        expect(benchmark).to_contain_text(text)
    data = page.get_by_test_id("card-data")
    for text in ("300", "600", "900", "labeled_samples", "abab"):
        expect(data).to_contain_text(text)
    expect(data.get_by_test_id("copy-query")).to_be_visible()
    validation = page.get_by_test_id("card-validation")
    expect(validation.get_by_test_id("gate-row")).to_have_count(4)
    expect(validation).to_contain_text("min_accuracy_gain")
    expect(validation).to_contain_text("0.47")
    deployments = page.get_by_test_id("card-deployments")
    expect(deployments).to_contain_text("deploy")
    expect(deployments).to_contain_text(f"job:{live.seeded.jobs[0]}")
    page.screenshot(path=str(shots / "model-card-1280x800.png"), full_page=True)
    page.context.close()


def test_lineage_graph_has_one_node_per_version(browser: object, live: Live,
                                                shots: Path) -> None:
    page = signed_in(browser, live, "viewer", path="services/digits/lineage")
    nodes = page.locator(".react-flow [data-testid=lineage-node]")
    expect(nodes).to_have_count(len(live.seeded.versions))
    assert sorted(int(n.get_attribute("data-version")) for n in nodes.all()) == \
        live.seeded.versions
    page.screenshot(path=str(shots / "lineage-1280x800.png"), full_page=True)
    nodes.filter(has_text="v3").first.click()
    page.wait_for_url("**/#/services/digits/versions/3")
    expect(page.get_by_test_id("card-validation")).to_contain_text("max_class_drop")
    page.context.close()


def test_service_page_history_and_chart(browser: object, live: Live, shots: Path) -> None:
    page = signed_in(browser, live, "viewer", path="services/digits")
    expect(page.get_by_test_id("update-row")).to_have_count(4)
    expect(page.get_by_test_id("update-row").nth(2)).to_contain_text("max_class_drop")
    expect(page.get_by_test_id("accuracy-chart").locator("svg").first).to_be_visible()
    expect(page.get_by_test_id("traffic-split")).to_contain_text("4")
    page.screenshot(path=str(shots / "service-1280x800.png"), full_page=True)
    page.context.close()


ACTIONS = ("action-update", "action-pause", "action-resume", "action-rollback",
           "action-approve", "action-reject")


def test_viewer_sees_no_actions_and_the_api_refuses_it(browser: object, live: Live) -> None:
    page = signed_in(browser, live, "viewer", path="services/digits")
    expect(page.get_by_test_id("update-row").first).to_be_visible()
    for path in ("services/digits", "services/digits/versions/2"):
        page.goto(f"{live.url}/#/{path}")
        page.wait_for_load_state("networkidle")
        for action in ACTIONS:
            assert page.get_by_test_id(action).count() == 0, (path, action)
    status = page.evaluate("""async () => {
        const token = sessionStorage.getItem('modelci.token');
        const r = await fetch('/api/services/digits/rollback', {method: 'POST',
            headers: {'Authorization': 'Bearer ' + token, 'Content-Type': 'application/json'},
            body: JSON.stringify({version: 2})});
        return [r.status, (await r.json()).error.code];
    }""")
    assert status == [403, "forbidden"]
    assert live.store.get_service("digits").champion_version == live.seeded.champion
    page.context.close()


def test_engineer_rollback_changes_the_champion_shown(browser: object, live: Live,
                                                      shots: Path) -> None:
    requests: list[str] = []
    page = signed_in(browser, live, "engineer", path="services/digits/versions/2")
    page.on("request", lambda request: requests.append(request.url))
    page.on("dialog", lambda dialog: dialog.accept())
    expect(page.get_by_test_id("action-update")).to_have_count(0)  # the card has no such action
    # The rollback (a Triton-less deploy plus a replica patch) must have answered before the
    # page moves on, as a user would wait for it.
    with page.expect_response(lambda r: r.url.endswith("/api/services/digits/rollback"),
                              timeout=30_000) as answered:
        page.get_by_test_id("action-rollback").click()
        confirm = page.get_by_role("button", name="Confirm rollback")
        if confirm.count():
            confirm.click()
    assert answered.value.status == 200, answered.value.text()
    page.goto(f"{live.url}/#/services/digits")
    expect(page.get_by_test_id("service-champion")).to_contain_text("2")
    expect(page.get_by_test_id("action-pause")).to_be_visible()
    page.screenshot(path=str(shots / "service-after-rollback.png"), full_page=True)
    page.goto(f"{live.url}/#/")
    digits = page.locator("[data-testid=service-row][data-service=digits]")
    expect(digits.get_by_test_id("champion-version")).to_contain_text("2")
    assert live.store.get_service("digits").champion_version == 2
    [event] = [d for d in live.store.list_deployments("digits") if d.action == "rollback"]
    assert (event.version, event.previous_version, event.actor) == (2, 4, "user:engineer-1")
    assert requests and not [u for u in requests if live.tokens["engineer"] in u]
    page.context.close()
