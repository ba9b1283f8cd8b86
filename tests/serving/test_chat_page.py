"""The chat page at / in a real headless browser (Debian's chromium through selenium): type a
message, watch the answer stream in, equal to the API's answer; a screenshot of it. Skipped
where selenium or chromium is missing (apt: chromium chromium-driver)."""

import shutil

import pytest

from tests.serving.conftest import http

webdriver = pytest.importorskip("selenium.webdriver")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM),
                                reason="no chromium / chromedriver here (apt: chromium "
                                       "chromium-driver)")


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-dev-shm-usage", "--window-size=1000,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_the_page_streams_an_answer_and_keeps_the_conversation(server, browser, tmp_path):
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    status, page = http("GET", f"{server}/")
    assert status == 200 and "<script>" in page and "http" not in page.split("<script>")[1]
    browser.get(f"{server}/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda d: d.find_element(By.ID, "model").text == "tiny-chat")
    for name, value in (("temperature", "0"), ("max-tokens", "8")):
        field = browser.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)

    def api(messages):  # what the API answers to the same conversation, same settings
        _, body = http("POST", f"{server}/v1/chat/completions", {
            "model": "tiny-chat", "messages": messages, "temperature": 0, "max_tokens": 8})
        return json.loads(body)["choices"][0]["message"]["content"]

    conversation = []
    for turn, text in enumerate(["def main():", "and then?"], start=1):
        browser.find_element(By.ID, "input").send_keys(text)
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d, n=turn: len(d.find_elements(
            By.CSS_SELECTOR, ".assistant[data-done='true']")) == n)
        conversation.append({"role": "user", "content": text})
        # the bubble's text as the page holds it (white space kept, as the API returns it)
        shown = browser.execute_script(
            "return document.querySelectorAll('.assistant')[arguments[0]].textContent",
            turn - 1)
        assert shown == api(conversation)
        conversation.append({"role": "assistant", "content": shown})
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".user")] == [
        "def main():", "and then?"]
    assert not browser.find_elements(By.CSS_SELECTOR, ".error")
    shot = tmp_path / "chat.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 5000
