"""The routes of the video jobs (`serve.video_jobs`): create, poll, download, cancel.

| route | answer |
| --- | --- |
| `POST /v1/jobs` (multipart: `video`, optional `model`, `strength`, `outscale`, `smoothing`) | 202, the job |
| `GET /v1/jobs/ID` | the job: status, frames done and total, frames/s, ETA, error, result |
| `GET /v1/jobs/ID/result` | the restored clip (409 while it runs) |
| `DELETE /v1/jobs/ID` | cancels the job and deletes its files |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from decrappify.errors import ConfigError
from decrappify.inference.restorer import Restorer
from decrappify.inference.video import VideoOptions
from decrappify.serve.errors import ApiError
from decrappify.serve.video_jobs import VideoJobs

#: (model name or None, strength or None) -> the restorer to run: the app's choice of model (`ApiError` 400).
Chooser = Callable[[str | None, float | None], Restorer]
JOBS_PATH = "/v1/jobs"


def add_video_routes(app: FastAPI, jobs: VideoJobs, choose: Chooser, auth: Any) -> None:
    """Add the four routes; `auth` is the app's token dependency."""

    @app.post(
        JOBS_PATH,
        dependencies=[auth],
        status_code=202,
        summary="Start restoring an uploaded video; the answer is the job to poll",
    )
    async def create_job(
        video: Annotated[UploadFile, File(description="a short clip: MP4, MOV, MKV, WebM, AVI, ...")],
        model: Annotated[str | None, Form(description="model name (GET /v1/models); default: the first")] = None,
        strength: Annotated[
            float | None, Form(ge=0, le=1, description="0: the model, 1: its pair (models with a pair only)")
        ] = None,
        outscale: Annotated[float | None, Form(ge=1, le=8, description="output size / input size")] = None,
        smoothing: Annotated[float, Form(ge=0, lt=1, description="temporal smoothing, 0: off")] = 0.0,
    ) -> JSONResponse:
        restorer = choose(model, strength)
        try:
            options = VideoOptions(outscale=outscale, smoothing=smoothing)
        except ConfigError as error:
            raise ApiError(400, str(error)) from None
        name = video.filename or "video"
        job = await run_in_threadpool(jobs.create, restorer, restorer.name, video.file, name, options)
        return JSONResponse(job.public(), status_code=202, headers={"Location": f"{JOBS_PATH}/{job.id}"})

    @app.get(f"{JOBS_PATH}/{{job_id}}", dependencies=[auth], summary="A video job's status and progress")
    async def job_status(job_id: str) -> dict[str, Any]:
        return jobs.get(job_id).public()

    @app.get(
        f"{JOBS_PATH}/{{job_id}}/result",
        dependencies=[auth],
        summary="The restored video, once the job is done",
        response_class=FileResponse,
    )
    async def job_result(job_id: str) -> FileResponse:
        job = jobs.get(job_id)
        if job.status != "done":
            raise ApiError(409, f"video job {job.id} is {job.status}" + (f": {job.error}" if job.error else ""))
        body = job.public()["result"]
        return FileResponse(job.target, media_type=body["media_type"], filename=job.result_name,
                            headers={"Cache-Control": "no-store"})  # fmt: skip

    @app.delete(f"{JOBS_PATH}/{{job_id}}", dependencies=[auth], summary="Cancel a video job, delete its files")
    async def delete_job(job_id: str) -> dict[str, Any]:
        job = jobs.delete(job_id)
        return {"id": job.id, "status": job.status, "deleted": True}
