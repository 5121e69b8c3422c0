"""GET /v1/models over real HTTP: the registry of `shelfready models list`, with licences,
opt-in, installed weights, and the engine each model would run on with the server's settings."""
from __future__ import annotations

import shutil

import pytest
from conftest_api import running_server

from removers import models, runtime
from removers.config import RuntimeConfig

pytestmark = pytest.mark.slow


def _by_name(body: dict) -> dict:
    return {m["name"]: m for m in body["models"]}


def test_models_lists_licences_opt_in_and_the_runtime_each_would_use():
    with running_server(warmup=False, model_runtime="onnxruntime", precision="fp32") as srv, srv.client() as c:
        r = c.get("/v1/models")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["server_model"] == "u2netp"
    rows = _by_name(body)
    assert set(models.MODELS) <= set(rows)
    assert set(models.REMBG_EXTRA_LICENCES) <= set(rows)
    u2, isnet = rows["u2netp"], rows["isnet-imgly"]
    assert u2["opt_in"] is False and "Apache-2.0" in u2["licence"]
    assert isnet["opt_in"] is True and "AGPL-3.0" in isnet["licence"]  # never the default: it says why
    assert rows["bria-rmbg"]["opt_in"] is True and "non-commercial" in rows["bria-rmbg"]["licence"]
    for name, row in rows.items():  # installed = the checked weights are really there
        if name in models.MODELS:
            assert row["installed"] == models.is_present(name), name
    # the engine the library picks for these settings, per kind
    for name in ("u2netp", "efficientnet_lite0"):
        want = runtime.resolve(RuntimeConfig(runtime="onnxruntime", precision="fp32"), rows[name]["kind"])
        assert (rows[name]["runtime"], rows[name]["precision"]) == (want.engine, want.precision)
    assert rows["u2netp"]["runtime"] == "onnxruntime" and rows["efficientnet_lite0"]["runtime"] == "torch"


def test_models_answers_before_the_models_load_and_reports_missing_weights(tmp_path, monkeypatch):
    """An empty model folder: the server never gets ready, /v1/models still says what is missing."""
    monkeypatch.setenv(models.HOME_ENV, str(tmp_path / "empty"))
    with running_server(wait_ready=False, warmup=False) as srv, srv.client() as c:
        rows = _by_name(c.get("/v1/models").json())
        assert rows["u2netp"]["installed"] is False
        assert rows["isnet-imgly"]["installed"] is False
    monkeypatch.delenv(models.HOME_ENV)
    real = models.weight_path("u2netp")
    if not real.is_file():
        pytest.skip("u2netp weights absent: run `shelfready models fetch`")
    dest = tmp_path / "home" / real.relative_to(models.rembg_home())
    dest.parent.mkdir(parents=True)
    shutil.copyfile(real, dest)
    monkeypatch.setenv(models.HOME_ENV, str(tmp_path / "home"))
    with running_server(wait_ready=False, warmup=False) as srv, srv.client() as c:
        assert _by_name(c.get("/v1/models").json())["u2netp"]["installed"] is True
