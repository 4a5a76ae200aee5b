"""Issue 21 in chromium: the shared colour scale from its control (and in the permalink), negligible
heads marked in the gallery, the modality legend without its own scroll bar, the picker in sight at
1024 px."""

from __future__ import annotations

import pytest

from explorer import ids

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_the_shared_scale_control_redraws_and_goes_in_the_permalink(ui, live):
    v = ui.open()
    assert v["scale"] == "own" and v["image_share"] is not None
    assert "on image" in ui.page.inner_text(f"#{ids.STATUS}")
    before = ui.renders()
    ui.page.locator(f"#{ids.SCALE} input[value=shared]").check()
    ui.wait_render(before)
    v = ui.wait_view("v.scale === 'shared'")
    assert "scale=shared" in v["permalink"]
    ui.page.wait_for_function("() => location.search.includes('scale=shared')")
    ui.page.wait_for_selector(f"#{ids.GALLERY} .hint:has-text('one colour scale')")
    assert "shared scale" in ui.page.inner_text(f"#{ids.STATUS}")
    again = ui.open("?" + v["permalink"])  # the link brings the scale back
    assert again["scale"] == "shared" and again["cmax"] == pytest.approx(v["cmax"])
    assert ui.page.locator(f"#{ids.SCALE} input[value=shared]").is_checked()


def test_the_modality_legend_fits_without_a_scroll_bar(ui, live):
    ui.open()
    ui.page.wait_for_selector(f"#{ids.MODALITY_CHART} .legend .traces")
    bars = ui.page.evaluate(
        f"""() => [...document.querySelectorAll('#{ids.MODALITY_CHART} .legend rect.scrollbar')]
               .map((r) => r.getBoundingClientRect().height)"""
    )
    assert all(h == 0 for h in bars), bars
    assert ui.page.locator(f"#{ids.MODALITY_CHART} .legend .traces").count() == 4


def test_at_1024_px_the_picker_stays_in_sight_above_the_controls(ui, live):
    ui.page.set_viewport_size({"width": 1024, "height": 768})
    ui.open()
    ui.page.wait_for_selector(".picker .card")
    picker = ui.page.locator(".picker").bounding_box()
    controls = ui.page.locator(".view-controls").bounding_box()
    card = ui.page.locator(".picker .card").first.bounding_box()
    assert picker["y"] + picker["height"] <= controls["y"] + 1  # above the controls, not below them
    assert card["y"] + card["height"] < 768  # a card is visible without scrolling
