"""The kiosk's two-player rock-paper-scissors (issue 27): a real daemon with two regions (left and right player)
replaying a real frame of two photos side by side (paper | rock), and the page in Debian's Chromium (headless,
Playwright) at 800x480, the kiosk screen's size: a countdown, both hands read at "Go!", the winner called by
region name and scored. Skips as tests/test_kiosk_browser.py does without playwright or chromium."""

import pytest
from test_kiosk_browser import DaemonProcess, Kiosk, browser  # noqa: F401 - the module's browser fixture
from test_regions import photos, write_pairs


@pytest.fixture()
def two_players(browser, tmp_path, tmp_path_factory):  # noqa: F811 - the imported fixture
    import device_bundle

    found = photos(tmp_path_factory)
    write_pairs(tmp_path / "frames", [(("paper", found["paper"][0]), ("rock", found["rock"][0]))])
    daemon = DaemonProcess(device_bundle.shared_bundle(tmp_path_factory), tmp_path / "frames", tmp_path / "daemon.log",
                           "--smoothing", "1", "--region", "left=0,0,0.5,1", "--region", "right=0.5,0,0.5,1").start()
    tab = Kiosk(browser, daemon)
    tab.context.close()
    tab.context = browser.new_context(viewport={"width": 800, "height": 480}, has_touch=True)
    tab.context.route("**/*", tab.guard)
    tab.page = tab.context.new_page()
    tab.page.on("pageerror", lambda error: tab.errors.append(str(error)))
    yield tab
    tab.close()
    daemon.stop()
    assert tab.blocked == [], f"the page tried to reach beyond the daemon: {tab.blocked}"
    assert tab.errors == [], f"JavaScript errors: {tab.errors}"


def test_two_players_both_hands_read_and_the_winner_called(two_players, tmp_path):
    kiosk = two_players
    assert [region["name"] for region in kiosk.daemon.status()["regions"]] == ["left", "right"]
    kiosk.open("?countdown=200&min_confidence=0")
    kiosk.wait_for(lambda: kiosk.testid("tally-you").text_content() == "left", 5, "the page never named the players")
    assert kiosk.testid("tally-computer").text_content() == "right"
    assert kiosk.play_round(kiosk.testid("play").click) == "win"  # paper (left) covers rock (right)
    assert kiosk.testid("result").inner_text().startswith("Left wins!")
    assert "Paper covers rock" in kiosk.testid("result-detail").inner_text()
    assert (kiosk.testid("you-choice").text_content(), kiosk.testid("computer-choice").text_content()) == \
        ("paper", "rock")
    assert (kiosk.score()["you"], kiosk.score()["computer"]) == (1, 0)
    kiosk.testid("reveal").wait_for(state="visible")
    assert kiosk.testid("play").bounding_box()["y"] + kiosk.testid("play").bounding_box()["height"] <= 480
    kiosk.page.screenshot(path=str(tmp_path / "two-players.png"))
