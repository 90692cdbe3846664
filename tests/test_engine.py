"""The song engine on the tiny DiT: mapping, determinism, samplers, cancel, queue, restart,
atomic writes and recovery from an out-of-memory failure."""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core.jobs import CANCELLED, DONE, FAILED, QUEUED, RUNNING
from core.library import Library
from core.models import FAILED as MODEL_FAILED
from core.models import ModelError
from core.request import SongRequest
from core.settings import Settings, SettingsError
from core.song import text2music_kwargs
from core.studio import Studio
from tests.conftest import wait_for

QUICK = SongRequest(caption="bright synth pop", lyrics="[Verse 1]\nhello", duration=10, steps=3)


def take_samples(studio: Studio, job_id: str) -> list[np.ndarray]:
    return [studio.library.read_audio(item.id).samples for item in studio.library.for_job(job_id)]


def run_song(studio: Studio, request: SongRequest) -> list[np.ndarray]:
    job = wait_for(studio, studio.submit_song(request).id)
    assert job.status == DONE, job.error
    return take_samples(studio, job.id)


def test_request_maps_to_pipeline_arguments(studio: Studio) -> None:
    dit = studio.load_dit()
    assert dit.variant == "sft"
    defaults = text2music_kwargs(replace(QUICK, steps=None, key="A minor", time_signature=3), dit)
    # diffusers would run every checkpoint at 8 steps: the variant default is always passed.
    assert defaults["num_inference_steps"] == 50
    assert defaults["guidance_scale"] == 7.0
    assert defaults["keyscale"] == "A minor"
    assert defaults["timesignature"] == "3"
    assert defaults["audio_duration"] == 10.0
    assert defaults["task_type"] == "text2music"
    explicit = text2music_kwargs(
        replace(QUICK, steps=12, guidance=4.0, cfg_start=0.1, cfg_end=0.6, instrumental=True), dit
    )
    assert explicit["num_inference_steps"] == 12
    assert explicit["guidance_scale"] == 4.0
    assert (explicit["cfg_interval_start"], explicit["cfg_interval_end"]) == (0.1, 0.6)
    assert explicit["lyrics"] == "[Instrumental]"


def test_turbo_runs_eight_steps_without_cfg(tiny_turbo_dit: Path, tmp_path: Path) -> None:
    studio = Studio(
        Settings(dit_model=str(tiny_turbo_dit), data_dir=tmp_path, device="cpu", preload=False)
    )
    try:
        dit = studio.load_dit()
        assert dit.variant == "turbo"
        kwargs = text2music_kwargs(replace(QUICK, steps=None, guidance=9.0), dit)
        assert kwargs["num_inference_steps"] == 8
        assert kwargs["guidance_scale"] == 1.0
        assert studio.variant_defaults().uses_cfg is False
    finally:
        studio.stop()


def test_takes_are_stored_as_48k_stereo_with_a_full_sidecar(studio: Studio) -> None:
    job = wait_for(studio, studio.submit_song(replace(QUICK, takes=2, seed=11)).id)
    assert job.status == DONE, job.error
    items = studio.library.for_job(job.id)
    assert [item.take_index for item in items] == [0, 1]
    assert [item.meta["seed"] for item in items] == [11, 12]
    for item in items:
        audio = studio.library.read_audio(item.id)
        assert audio.samples.shape == (2, 480_000)
        sidecar = json.loads((item.audio_file.parent / "meta.json").read_text())
        assert sidecar["request"]["caption"] == "bright synth pop"
        assert sidecar["request"]["seed"] == item.meta["seed"]
        assert sidecar["models"]["dit"]["source"] == studio.settings.dit_model
        assert sidecar["models"]["dit"]["revision"] == "main"
        assert sidecar["timings"]["diffusion_seconds"] >= 0
        assert sidecar["sample_rate"] == 48_000
    assert job.timings["diffusion_seconds"] > 0


def test_same_request_and_seed_give_bit_identical_audio(studio: Studio) -> None:
    first = run_song(studio, replace(QUICK, seed=1234))
    second = run_song(studio, replace(QUICK, seed=1234))
    other = run_song(studio, replace(QUICK, seed=1235))
    assert np.array_equal(first[0], second[0])
    assert not np.array_equal(first[0], other[0])


def test_take_two_replays_alone_from_its_own_seed(studio: Studio) -> None:
    pair = run_song(studio, replace(QUICK, seed=500, takes=2))
    alone = run_song(studio, replace(QUICK, seed=501, takes=1))
    assert np.array_equal(pair[1], alone[0])


def test_sde_differs_from_ode_and_is_still_reproducible(studio: Studio) -> None:
    ode = run_song(studio, replace(QUICK, seed=77))
    sde = run_song(studio, replace(QUICK, seed=77, infer_method="sde"))
    sde_again = run_song(studio, replace(QUICK, seed=77, infer_method="sde"))
    assert not np.array_equal(ode[0], sde[0])
    assert np.array_equal(sde[0], sde_again[0])
    # The sde scheduler is only borrowed for its job.
    assert not studio.load_dit().pipe.scheduler.config.get("stochastic_sampling", False)


def test_cancel_stops_between_steps_and_saves_nothing(studio: Studio) -> None:
    job = studio.submit_song(replace(QUICK, duration=60, steps=200))
    deadline = time.time() + 60
    while time.time() < deadline:
        current = studio.jobs.get(job.id)
        if current.status == RUNNING and current.phase == "diffusion" and current.step > 0:
            break
        time.sleep(0.02)
    assert studio.jobs.cancel(job.id)
    finished = wait_for(studio, job.id)
    assert finished.status == CANCELLED
    assert finished.step < 200
    assert studio.library.for_job(job.id) == []
    # The worker is free again.
    assert run_song(studio, QUICK)


def test_queued_job_cancels_at_once(settings: Settings) -> None:
    studio = Studio(settings)  # no worker: everything stays queued
    try:
        job = studio.submit_song(QUICK)
        assert studio.jobs.cancel(job.id)
        assert studio.jobs.get(job.id).status == CANCELLED
    finally:
        studio.stop()


def test_jobs_from_many_sessions_run_in_submission_order(settings: Settings) -> None:
    studio = Studio(settings)
    submitted: list[str] = []
    lock = threading.Lock()

    def session(index: int) -> None:
        job = studio.submit_song(replace(QUICK, steps=1, caption=f"song {index}"))
        with lock:
            submitted.append(job.id)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    order = [job.id for job in studio.jobs.active()]
    assert sorted(order) == sorted(submitted)
    assert [studio.jobs.get(job_id).position for job_id in order] == [1, 2, 3, 4, 5]
    studio.start()
    try:
        finished = [wait_for(studio, job_id) for job_id in order]
        starts = [job.started for job in finished]
        assert all(job.status == DONE for job in finished)
        assert starts == sorted(starts)
        for earlier, later in itertools.pairwise(finished):
            assert earlier.finished <= later.started
    finally:
        studio.stop()


def test_library_and_queue_survive_a_restart(settings: Settings) -> None:
    studio = Studio(settings).start()
    done = wait_for(studio, studio.submit_song(replace(QUICK, seed=3)).id)
    kept = studio.library.for_job(done.id)
    studio.stop()

    paused = Studio(settings)  # a Studio that stops before its worker picks the job up
    queued = paused.submit_song(replace(QUICK, seed=4))
    paused.stop()

    restarted = Studio(settings).start()
    try:
        assert [item.id for item in restarted.library.for_job(done.id)] == [kept[0].id]
        assert restarted.jobs.get(queued.id).status in (QUEUED, RUNNING, DONE)
        assert wait_for(restarted, queued.id).status == DONE
        assert len(restarted.library.list()) == 2
    finally:
        restarted.stop()


def test_a_job_running_at_shutdown_is_marked_for_retry(settings: Settings) -> None:
    studio = Studio(settings)
    job = studio.submit_song(QUICK)
    assert studio.jobs.claim_next().id == job.id  # it was running when the power went
    studio.stop()
    restarted = Studio(settings)
    try:
        interrupted = restarted.jobs.get(job.id)
        assert interrupted.status == FAILED
        assert "Retry" in interrupted.error
        assert restarted.retry(job.id).status == QUEUED
    finally:
        restarted.stop()


def test_library_writes_are_atomic_and_recovered(settings: Settings) -> None:
    studio = Studio(settings)
    try:
        library = studio.library
        good = library.add("take", {"request": {}}, samples=np.zeros((2, 4800), np.float32))
        with pytest.raises(Exception):  # noqa: B017 - any encode failure must leave nothing
            library.add("take", {}, samples=np.zeros((2, 10, 3), np.float32))
        leftovers = [p.name for p in library.root.iterdir() if p.name.startswith(".tmp-")]
        assert leftovers == []
        assert [item.id for item in library.list()] == [good.id]
        # A crash mid-write leaves a staging folder; a crash after the rename leaves an
        # unindexed folder. Restart cleans the first and indexes the second.
        (library.root / ".tmp-crashed").mkdir()
        (library.root / ".tmp-crashed" / "audio.flac").write_bytes(b"half")
        orphan = library.add("take", {"request": {}}, samples=np.zeros((2, 4800), np.float32))
        studio.db.execute("DELETE FROM items WHERE id = ?", (orphan.id,))
    finally:
        studio.stop()
    reopened = Studio(settings)
    try:
        assert not (reopened.library.root / ".tmp-crashed").exists()
        assert {item.id for item in reopened.library.list()} == {good.id, orphan.id}
    finally:
        reopened.stop()


def test_out_of_memory_fails_one_job_and_the_next_runs(studio: Studio) -> None:
    dit = studio.load_dit()
    fired: list[bool] = []

    def run_out_of_memory(module: torch.nn.Module, args: tuple) -> None:
        if not fired:
            fired.append(True)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")

    hook = dit.pipe.transformer.register_forward_pre_hook(run_out_of_memory)
    try:
        failed = wait_for(studio, studio.submit_song(QUICK).id)
        succeeded = wait_for(studio, studio.submit_song(QUICK).id)
    finally:
        hook.remove()
    assert failed.status == FAILED
    assert "ran out of memory" in failed.error
    assert "Traceback" not in failed.error
    assert studio.library.for_job(failed.id) == []
    assert succeeded.status == DONE
    assert studio.worker.is_alive()


def test_missing_or_wrong_models_give_clear_messages(tmp_path: Path) -> None:
    missing = Studio(
        Settings(dit_model=str(tmp_path / "nowhere"), data_dir=tmp_path / "d1", preload=False)
    )
    try:
        with pytest.raises(ModelError, match="does not exist"):
            missing.load_dit()
        assert missing.dit.status().state == MODEL_FAILED
        job = wait_for(missing.start(), missing.submit_song(QUICK).id)
        assert job.status == FAILED
        assert "does not exist" in job.error
    finally:
        missing.stop()
    not_a_pipeline = tmp_path / "some-folder"
    not_a_pipeline.mkdir()
    (not_a_pipeline / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    wrong = Studio(Settings(dit_model=str(not_a_pipeline), data_dir=tmp_path / "d2", preload=False))
    try:
        with pytest.raises(ModelError, match="not an ACE-Step"):
            wrong.load_dit()
    finally:
        wrong.stop()


def test_hub_model_missing_offline_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    studio = Studio(Settings(data_dir=tmp_path / "data", preload=False))
    try:
        assert studio.dit.status().state == "not downloaded"
        with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
            studio.load_dit()
        assert "not in the Hugging Face cache" in studio.dit.status().message
    finally:
        studio.stop()


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "ACE_STUDIO_DIT_MODEL": "/models/dit",
            "ACE_STUDIO_MAX_DURATION": "240",
            "ACE_STUDIO_VAE_TILING": "off",
            "ACE_STUDIO_DATA_DIR": str(tmp_path),
        }
    )
    assert settings.dit_model == "/models/dit"
    assert settings.max_duration == 240
    assert settings.vae_tiling is False
    assert settings.data_dir == tmp_path
    with pytest.raises(SettingsError, match="ACE_STUDIO_MAX_TAKES must be a whole number"):
        Settings.from_env({"ACE_STUDIO_MAX_TAKES": "many"})
    with pytest.raises(SettingsError, match="OFFLOAD"):
        Settings.from_env({"ACE_STUDIO_OFFLOAD": "disk"})


def test_readme_documents_every_setting() -> None:
    from dataclasses import fields

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for field in fields(Settings):
        assert f"ACE_STUDIO_{field.name.upper()}" in readme


def test_library_lineage_reads_as_history(settings: Settings) -> None:
    studio = Studio(settings)
    try:
        library = studio.library
        silence = np.zeros((2, 4800), np.float32)
        root = library.add("take", {"request": {}}, samples=silence, operation="generate")
        edit = library.add(
            "take",
            {"request": {"region_start": 42, "region_end": 65}},
            samples=silence,
            parent_id=root.id,
            operation="edit",
        )
        extend = library.add(
            "take",
            {"request": {"extend_seconds": 30, "extend_side": "end"}},
            samples=silence,
            parent_id=edit.id,
            operation="extend",
        )
        from core.library import history_label

        assert history_label(library.lineage(extend.id)) == "v1 → edit 0:42–1:05 → extend +30 s"
        assert isinstance(library, Library)
    finally:
        studio.stop()
