"""The explorer's patch inspector (Dataset panel) and teaching room (pytest-qt, offscreen): inspect a patch of a
sample image after a tiny run, step EM forward and back, play, add a point, the same-histogram pair, and the
``--select / --patch`` and ``--panel teaching`` screenshots. Waits are armed before the click that starts work."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pytestqt")
from PySide6.QtCore import QPoint, QPointF, QSettings, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

_APP = QApplication.instance() or QApplication(["fvstudio-tests"])

from fvstudio.gui.app import default_config, run_gui, sample_dataset_root  # noqa: E402
from fvstudio.gui.main_window import MainWindow  # noqa: E402
from fvstudio.gui.teaching_panel import TeachingPanel  # noqa: E402
from fvstudio.pipeline import teaching as T  # noqa: E402
from fvstudio.pipeline.inspector import sift_glyph  # noqa: E402
from fvstudio.engine.spatial import append_xy
from fvstudio.pipeline.steps.pca import PcaStep  # noqa: E402

pytestmark = pytest.mark.gui

TINY = {"dataset.n_train": 4, "dataset.n_test": 3, "dataset.max_pixels": 20_000, "descriptors.scales": 1,
        "descriptors.step": 8, "pca.n_components": 16, "pca.sample": 2_000, "gmm.n_components": 12,
        "gmm.max_iter": 10, "gmm.sample": 2_000, "classifier.select_lambda": False, "classifier.epochs": 5,
        "encoder.pyramid": "1x1", "descriptors.channels": ["sift"]}
TIMEOUT = 90_000


# ------------------------------------------------------------------------------------------ teaching room
@pytest.fixture
def teaching(qtbot):
    p = TeachingPanel()
    qtbot.addWidget(p)
    p.resize(1300, 800)
    p.show()
    qtbot.waitExposed(p)
    return p


def test_em_steps_forward_and_back(teaching, qtbot):
    p = teaching
    p.seed.setValue(3)
    start = p.toy.state
    assert not p.m_button.isEnabled() and not p.back_button.isEnabled()
    seen = [p.toy.state]
    for _ in range(5):
        p.e_button.click()
        assert p.m_button.isEnabled()
        seen.append(p.toy.state)
        p.m_button.click()
        seen.append(p.toy.state)
    ll = np.array(p.toy.state.log_likelihood)
    assert len(ll) == 5 and np.all(np.diff(ll) >= -1e-6)
    x, y = p.ll_curve.getData()
    np.testing.assert_allclose(y, ll)
    # the ellipses drawn are the state's 1-sigma ellipses
    e1 = p.em_plot.gaussians[0].e1.getData()
    np.testing.assert_allclose(e1[0], T.gaussian_ellipses(p.toy.state)[0][0][:, 0], rtol=1e-6)
    for earlier in reversed(seen[:-1]):
        p.back_button.click()
        assert p.toy.state.equals(earlier)
    assert p.toy.state.equals(start) and not p.back_button.isEnabled()


def test_play_click_and_pages(teaching, qtbot):
    p = teaching
    p.speed.setValue(20)
    p.play_button.click()
    qtbot.waitUntil(lambda: len(p.toy.state.log_likelihood) >= 4, timeout=10_000)
    p.play_button.click()
    assert not p.timer.isActive()
    n_steps = len(p.toy.history)
    # a click on the plot adds a point there (and re-initialises)
    vb = p.em_plot.getPlotItem().getViewBox()
    pos = p.em_plot.mapFromScene(vb.mapViewToScene(QPointF(1.0, -1.0)))
    n = len(p.toy.points)
    qtbot.mouseClick(p.em_plot.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(pos.x(), pos.y()))
    assert len(p.toy.points) == n + 1 and n_steps > 0 and not p.toy.history
    np.testing.assert_allclose(p.toy.points[-1], [1.0, -1.0], atol=0.1)
    for _ in range(8):
        p.e_button.click()
        p.m_button.click()
    # page 2: the FV bars are the encoder's vector; the L2 toggle redraws it
    p.pages.setCurrentIndex(1)
    h = p.fv_bars.bars.opts["height"]
    np.testing.assert_allclose(h, p.encoding.fv, rtol=1e-6)
    assert np.linalg.norm(h) == pytest.approx(1.0, abs=1e-5)
    p.l2_box.setChecked(False)
    assert not np.allclose(p.fv_bars.bars.opts["height"], h)
    assert np.linalg.norm(p.encoding.fv) != pytest.approx(1.0, abs=1e-3)
    # page 3: same soft-BoV, different FVs
    p.pages.setCurrentIndex(2)
    assert p.pair is not None
    np.testing.assert_array_equal(p.pair.a.soft_bow, p.pair.b.soft_bow)
    assert np.linalg.norm(p.pair.a.fv - p.pair.b.fv) > 0.3
    assert "‖BoV_A − BoV_B‖ = 0" in p.pair_info.text()


# ------------------------------------------------------------------------------------------ patch inspector
def test_inspect_a_patch(qtbot, tmp_path):
    if sample_dataset_root() is None:
        pytest.skip("sample_data/ is not present")
    cfg = default_config()
    cfg.update(TINY)
    ws = tmp_path / "ws"
    w = MainWindow(ws, cfg, QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(w)
    w.resize(1400, 880)
    w.show()
    qtbot.waitExposed(w)
    w.show_panel("pipeline")
    with qtbot.waitSignal(w.run_recorded, timeout=TIMEOUT):
        w.pipeline_panel.run_all_button.click()
    qtbot.waitUntil(w.is_idle, timeout=TIMEOUT)
    w.show_panel("dataset")
    dp = w.dataset_panel
    image = int(w.pipeline.splits[0].test[0])
    image_id = w.pipeline.dataset.ids[image]
    assert dp.select_by_id(image_id)
    dp.grid_toggle.setChecked(True)
    qtbot.wait(50)
    view = dp.view
    target = view.mapFromScene(QPointF(70.0, 40.0))
    with qtbot.waitSignal(dp.inspector.inspected, timeout=TIMEOUT) as blocker:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=target)
    ins = blocker.args[0]
    assert ins.image_index == image and dp.inspector.isVisible()
    assert abs(ins.position[0] - 70) <= 8 and abs(ins.position[1] - 40) <= 8
    # the engine's posteriors of that descriptor: the bars are its top ten, they and the rest sum to 1
    pipe = w.pipeline
    d = pipe.artifact("descriptors").get(image)
    # the GMM models the projected descriptor with its patch position appended (gmm.position_scale)
    x = append_xy(PcaStep.project(pipe.artifact("pca"), d.descriptors[ins.patch:ins.patch + 1]), d.positions[ins.patch:ins.patch + 1],
                  d.image_shape, pipe.config.get("gmm.position_scale"))
    post = pipe.artifact("gmm").predict_proba(x, threshold=pipe.config.get("encoder.posterior_threshold"))[0]
    top = np.argsort(-post, kind="stable")[:min(10, int((post > 0).sum()))]
    bars = dp.inspector.posterior_bars._bars[0].opts["height"]
    np.testing.assert_allclose(bars, post[top], atol=1e-6)
    assert post.sum() == pytest.approx(1.0, abs=1e-5)
    assert f"{int((post > 0).sum())} of {len(post)} posteriors" in dp.inspector.header.text()
    # the SIFT glyph: 16 cells x 8 bins from the stored descriptor
    glyph = dp.inspector.glyph.sift
    assert glyph.shape == (4, 4, 8)
    np.testing.assert_allclose(glyph, sift_glyph(d.descriptors[ins.patch]))
    assert dp.inspector.glyph.colours.shape == (4, 4, 3)
    # overlays: the visual word's patches, then the class evidence heat map
    assert view._marks.path().elementCount() > 0 and not view._selected.path().isEmpty()
    dp.inspector.overlay.setCurrentText("class evidence")
    assert not view._heat.pixmap().isNull() and ins.evidence is not None
    assert ins.evidence.class_name in dp.inspector.evidence.text()
    assert len(ins.claimed) >= 1 and dp.inspector.claimed_labels[0].pixmap() is not None
    qtbot.waitUntil(lambda: w.is_idle() and dp.inspector_idle(), timeout=TIMEOUT)
    w.close()
    # the same state from the command line, rendered offscreen
    shot = tmp_path / "inspector.png"
    assert run_gui(workspace=str(ws), screenshot=str(shot), select=image_id, patch="70,40") == 0
    assert shot.stat().st_size > 10_000
    assert run_gui(workspace=str(ws), screenshot=str(tmp_path / "x.png"), select="nope/none.jpg") == 2
    teach = tmp_path / "teaching.png"
    assert run_gui(workspace=str(ws), screenshot=str(teach), panel="teaching") == 0 and teach.stat().st_size > 10_000
