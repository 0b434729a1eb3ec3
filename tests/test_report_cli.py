"""``python -m curate.report`` / ``scripts/plot_sweep.py`` as a user runs them: outputs never inside
inputs, bad settings named, the Hydra conventions of every stage, the earlier spelling kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_errors import _one_error_line

from curate.hierarchy import HierarchicalKMeans
from curate.io.store import write_store


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


@pytest.fixture
def image_curation(tmp_path) -> dict[str, Path]:
    """An image folder pool (24 PNGs), its embedding store (source: the folder) and a clustering of it."""
    pool = tmp_path / "pool"
    pool.mkdir()
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, size=(8, 8), dtype=np.uint8)).save(pool / f"{i:02d}.png")
    ids = [f"{i:02d}.png" for i in range(24)]
    source = {"kind": "image_folder", "root": str(pool.resolve()), "count": 24}
    emb = rng.normal(size=(24, 4)).astype(np.float32)
    write_store(tmp_path / "store", emb, ids=ids, source=source)
    model = HierarchicalKMeans([{"k": 4}, {"k": 2}], n_iter=5, seed=0).fit(emb)
    model.save(tmp_path / "cluster", extra={"input": {"kind": "store", "path": str(tmp_path / "store")}})
    return {"pool": pool, "store": tmp_path / "store", "cluster": tmp_path / "cluster", "root": tmp_path}


def test_report_output_inside_an_input_is_refused_before_anything_is_written(image_curation, cli):
    c = image_curation
    before = _files(c["root"])
    report = ["-m", "curate.report", f"cluster={c['cluster']}", "target=8", "examples=2"]
    cases = [
        (c["pool"], "the input's source root="),  # a re-embed of the pool would take the PNGs as images
        (c["pool"] / "report", "the input's source root="),
        (c["store"], "the input input="),
        (c["store"] / "report", "the input input="),
        (c["cluster"], "the input cluster="),
        (c["root"], "the input"),  # holds them all
    ]
    for out, needle in cases:
        _one_error_line(cli(*report, f"out={out}", check=False), f"out={out}", needle)
    assert _files(c["root"]) == before  # no PNG, no report.html, no .hydra/
    cli(*report)  # the default, <cluster>/report, is fine
    assert (c["cluster"] / "report" / "report.html").is_file() and not list(c["root"].rglob(".hydra"))


def test_report_settings_are_checked_and_named(image_curation, cli):
    c = image_curation
    report = ["-m", "curate.report", f"cluster={c['cluster']}", f"out={c['root'] / 'r'}"]
    _one_error_line(cli(*report, "target=2.5", check=False), "target=2.5", "(pass an int for a count)")
    _one_error_line(cli(*report, "target=0", check=False), "target=0")
    _one_error_line(cli(*report, "examples=-1", check=False), "examples must be >= 1")
    _one_error_line(cli(*report, "exampels=3", check=False), "exampels")
    assert not (c["root"] / "r").exists()
    # an exact count is taken as it is (not truncated from a float)
    cli(*report, "target=7", "examples=2")
    assert "7 items" in (c["root"] / "r" / "report.html").read_text()


def test_report_is_a_hydra_app_and_keeps_the_earlier_spelling(image_curation, cli):
    c = image_curation
    helped = cli("-m", "curate.report", "--help").stdout
    assert "key=value" in helped and "examples: 16" in helped and "cluster: ???" in helped
    job = cli("-m", "curate.report", f"cluster={c['cluster']}", "target=5", "--cfg", "job").stdout
    assert f"cluster: {c['cluster']}" in job and "target: 5" in job
    out = c["root"] / "flags"
    proc = cli("-m", "curate.report", "--cluster", str(c["cluster"]), f"--out={out}", "--target", "6")
    assert proc.stderr.count("deprecated") == 1 and f"cluster={c['cluster']}" in proc.stderr
    assert "6 items" in (out / "report.html").read_text()
    sweep = ["-m", "curate.report", "-m", f"cluster={c['cluster']}", f"hydra.sweep.dir={c['root'] / 'sweep'}"]
    cli(*sweep, f"out={c['root'] / 'sw3'},{c['root'] / 'sw4'}", "target=3")
    assert all("3 items" in (c["root"] / f"sw{i}" / "report.html").read_text() for i in (3, 4))


def test_plot_sweep_names_a_garbage_metrics_file(tmp_path, cli):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.json").write_text('{"kl_sample": 0.1}')
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.json").write_text("{not json")
    script = str(Path(__file__).resolve().parents[1] / "scripts" / "plot_sweep.py")
    _one_error_line(cli(script, str(tmp_path), check=False), str(tmp_path / "b" / "metrics.json"), "not valid JSON")


def test_the_tools_see_no_cluster_config_group(cli):
    """``cluster=DIR`` is a value only while no ``cluster`` group is in the ConfigStore (the stage
    modules register one): the report and inspect apps must not import them."""
    code = (
        "import curate.report, curate.inspect\n"
        "from hydra.core.config_store import ConfigStore\n"
        "assert 'cluster' not in ConfigStore.instance().repo, 'a stage module was imported'\n"
    )
    cli("-c", code)


def test_inspect_png_inside_the_image_pool_is_refused(image_curation, cli):
    c = image_curation
    before = _files(c["root"])
    proc = cli("-m", "curate.inspect", f"cluster={c['cluster']}", f"out={c['pool'] / 'inspect.png'}", check=False)
    _one_error_line(proc, "the input's source root=")
    assert _files(c["root"]) == before and "level 1" not in proc.stdout
    cli("-m", "curate.inspect", f"cluster={c['cluster']}", f"out={c['root'] / 'inspect.png'}")
    assert (c["root"] / "inspect.png").is_file()
