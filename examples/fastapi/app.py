"""A tiny FastAPI app to run under forkd with Debian's uvicorn.

uvicorn serves it on the socket forkd hands over as fd 3 (`--fd 3`); see
README.md in this directory.
"""

import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def hello():
    """Say which worker answered: its pid, slot and generation."""
    return {
        "message": "hello from FastAPI",
        "pid": os.getpid(),
        "worker_id": os.environ.get("FORKD_WORKER_ID"),
        "generation": os.environ.get("FORKD_GENERATION"),
        "instance": os.environ.get("FORKD_INSTANCE"),
    }
