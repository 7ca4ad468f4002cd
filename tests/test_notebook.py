"""The quickstart notebook (issue 29, part 2): committed without outputs, and every cell runs, on a few thousand
training images, in a real Jupyter kernel (nbclient); an error in any cell fails the test."""

import pytest

from tests.conftest import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
NOTEBOOK = REPO / "docs" / "quickstart.ipynb"


def test_the_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert len(code) >= 7
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


def test_every_cell_runs_on_a_few_thousand_images(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    (parameters,) = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    assert "LIMIT = None" in parameters.source  # the notebook as users run it: all the images
    parameters.source = (parameters.source.replace("LIMIT = None", "LIMIT = 4000")
                         .replace('EXAMPLES = "examples"', f'EXAMPLES = {str(REPO / "docs" / "examples")!r}'))
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()  # runs/ goes there
    outputs = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs)
    assert "test accuracy" in outputs and "calibration error" in outputs
    images = sum("image/png" in output.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
                 for output in cell.outputs)
    assert images >= 6  # curves, confusion, mistakes, the drawn digit, reliability, explanation
    assert list((tmp_path / "runs" / "explanations").glob("drawn-5-*.png"))
