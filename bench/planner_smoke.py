"""The planner through the whole Studio on a GPU, with the tiny test models: loading (and its
kernel warm-up), a planned song (reasoning, codes in a CUDA graph, the DiT), the same seed
again, and the Create sample / Understand jobs. A check, not a benchmark.

    PYTHONPATH=. python bench/planner_smoke.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from core.request import SongRequest, Thinking
from core.settings import Settings
from core.studio import Studio
from tests.tiny.dit import build_tiny_dit
from tests.tiny.planner import build_tiny_planner


def wait(studio: Studio, job_id: str):
    while True:
        job = studio.jobs.get(job_id)
        if job.is_finished:
            return job
        time.sleep(0.05)


def main() -> None:
    root = Path(tempfile.mkdtemp())
    settings = Settings(
        dit_model=str(build_tiny_dit(root / "dit")),
        planner_model=str(build_tiny_planner(root / "Ace-Step1.5")),
        data_dir=root / "data",
        device="cuda",
        preload=False,
    )
    studio = Studio(settings).start()
    try:
        request = SongRequest(
            caption="uplifting synth pop", lyrics="[Verse]\nla la", duration=20, seed=7,
            steps=4, language="unknown", thinking=Thinking(enabled=True),
        )  # fmt: skip
        plans = []
        for attempt in range(2):
            started = time.time()
            job = wait(studio, studio.submit_song(request).id)
            assert job.status == "done", job.error
            take = studio.library.for_job(job.id)[0]
            samples = studio.library.read_audio(take.id).samples
            plans.append(job.plan)
            print(
                f"song {attempt}: {time.time() - started:.1f} s, codes {job.plan['codes']}, "
                f"audio {samples.shape[1] / 48000:.1f} s, language {take.meta['request']['language']}, "
                f"timings {job.timings}"
            )
            assert samples.shape[1] == job.plan["codes"] * 9600
        assert plans[0]["audio_codes"] == plans[1]["audio_codes"], "same seed, other plan"
        sample = wait(studio, studio.jobs.submit("create_sample", {"idea": "folk", "seed": 2}).id)
        assert sample.status == "done", sample.error
        print("create sample:", {k: str(v)[:40] for k, v in sample.result.items()})
        heard = wait(studio, studio.jobs.submit("understand", {"item_id": take.id}).id)
        assert heard.status == "done", heard.error
        print("understand: codes", heard.result["codes"], "bpm", heard.result["bpm"])
        print("planner smoke on CUDA: ok")
    finally:
        studio.stop()


if __name__ == "__main__":
    main()
