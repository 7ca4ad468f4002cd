"""A model ready to predict (mnist_kit.inference) and what the server answers (mnist_kit.protocol), without HTTP:
the same numbers as evaluating the run, for tensors, image files and v2 requests; and no FastAPI needed."""

import base64
import subprocess
import sys

import pytest
import torch

from mnist_kit.data import normalize
from mnist_kit.errors import UserError
from mnist_kit.inference import open_predictor
from mnist_kit.predict import gray_png
from mnist_kit.protocol import infer, model_metadata, predict_canvas
from mnist_kit.runs import build_run_model, find_run
from tests.conftest import REPO


def test_a_predictor_answers_as_the_run_model_does(trained_run, splits):
    predictor = open_predictor(trained_run.run_dir)
    assert predictor.name == "quick" and predictor.classes == splits.classes and predictor.input_shape == (1, 28, 28)
    images = splits.test_images[:64]
    inputs = predictor.normalized(images[:, None].float() / 255)
    assert torch.equal(inputs, normalize(images, splits.mean, splits.std))
    with torch.inference_mode():
        expected = build_run_model(find_run(trained_run.run_dir))(inputs).float().softmax(dim=1)
    assert torch.equal(predictor.probabilities(inputs), expected)
    top = predictor.top_k(inputs, 3)
    assert [int(t["digit"]) for t in top] == expected.argmax(dim=1).tolist()
    assert all(len(t["top_k"]) == 3 and t["top_k"][0]["probability"] == t["probability"] for t in top)
    assert predictor.probabilities(inputs[:0]).shape == (0, 10)


def test_v2_requests_and_the_draw_page_answer_without_http(trained_run, splits):
    predictor = open_predictor(trained_run.run_dir)
    pixels = (splits.test_images[:3].float() / 255)[:, None]
    request = {"id": "r1", "inputs": [{"name": "image", "datatype": "FP32", "shape": [3, 1, 28, 28],
                                       "data": pixels.flatten().tolist()}]}
    answer = infer(predictor, request)
    labels = next(o for o in answer["outputs"] if o["name"] == "label")["data"]
    assert answer["id"] == "r1" and labels == predictor.probabilities(predictor.normalized(pixels)).argmax(1).tolist()
    png = gray_png(pixels[0, 0].numpy())
    files = infer(predictor, {"inputs": [{"name": "image_file", "datatype": "BYTES", "shape": [1],
                                          "data": [base64.b64encode(png).decode()]}], "outputs": [{"name": "label"}]})
    assert [o["name"] for o in files["outputs"]] == ["label"]
    page = predict_canvas(predictor, png)
    assert page["top"][0]["digit"] == str(files["outputs"][0]["data"][0]) and page["input"].startswith("data:image/png")
    assert model_metadata(predictor)["outputs"][0]["shape"] == [-1, 10]
    with pytest.raises(UserError, match="unknown input 'pixels'"):
        infer(predictor, {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [0.0]}]})


def test_inference_and_the_protocol_need_no_web_framework(trained_run):
    """As without the [serve] extra: importing FastAPI, Starlette or uvicorn fails, and a v2 request is answered."""
    code = ("import sys\n"
            "for name in ('fastapi', 'starlette', 'uvicorn'): sys.modules[name] = None  # import fails\n"
            "from mnist_kit.inference import open_predictor\n"
            "from mnist_kit.protocol import infer\n"
            "answer = infer(open_predictor(sys.argv[1]), {'inputs': [{'name': 'image', 'datatype': 'FP32', "
            "'shape': [1, 1, 28, 28], 'data': [0.0] * 784}]})\n"
            "print(len(answer['outputs'][0]['data']))")
    out = subprocess.run([sys.executable, "-c", code, str(trained_run.run_dir)], capture_output=True, text=True,
                         cwd=REPO)
    assert out.returncode == 0 and out.stdout.strip() == "10", out.stderr


def test_a_request_of_many_large_image_files_is_bounded(trained_run):
    """Issue 26 row 11: 512 PNGs of 2000x2000 in one v2 request cost 25 s of CPU; a request's image files may hold
    64 million pixels together, counted from their headers before any is decoded."""
    import io

    from PIL import Image

    from mnist_kit.protocol import MAX_REQUEST_PIXELS

    buffer = io.BytesIO()
    Image.new("L", (2000, 2000)).save(buffer, "PNG")
    item = base64.b64encode(buffer.getvalue()).decode()
    count = MAX_REQUEST_PIXELS // 4_000_000 + 1
    request = {"inputs": [{"name": "image_file", "datatype": "BYTES", "shape": [count], "data": [item] * count}]}
    with pytest.raises(UserError, match=f"{count} images hold 68,000,000 pixels, over the 64,000,000"):
        infer(open_predictor(trained_run.run_dir), request)
