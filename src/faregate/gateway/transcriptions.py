"""Audio transcriptions in the pipeline: the duration bound a call's holds are sized by, the
worst-case usage a plan prices before the upstream call, and the one upstream attempt on a
deployment whose wire format transcribes. The audio stays in memory throughout."""

from __future__ import annotations

from decimal import Decimal

from faregate.audio import AudioUpload
from faregate.config import Deployment
from faregate.gateway.call import Call
from faregate.providers.base import Provider, ProviderError, TranscriptionResult
from faregate.usage import Usage

KIND = "transcriptions"


def prepare(call: Call) -> None:
    """Size the call before any stage runs: `est_seconds` is the upload's duration bound
    (exact, rounded up, for a WAV; from the byte count at a low bitrate otherwise)."""
    upload: AudioUpload = call.body["file"]
    call.est_seconds = upload.seconds_bound


def worst_usage(call: Call, unit: bool = False) -> Usage:
    """The most a call can be billed for, as the provider will report it: its bound in
    seconds (`unit`: one second, to find the plan buckets a second falls into)."""
    return Usage(seconds=Decimal(1 if unit else call.est_seconds))


async def transcribe(provider: Provider, deployment: Deployment, call: Call) -> TranscriptionResult:
    """One attempt; a deployment whose wire cannot transcribe fails over to the next."""
    if KIND not in provider.capabilities:
        raise ProviderError(
            f"Deployment {deployment.id!r} does not serve audio transcriptions.",
            status=400,
            code="model_not_supported",
            type="invalid_request_error",
            param="model",
            retryable=True,
        )
    return await provider.transcriptions(call.body, deployment.model)  # type: ignore[attr-defined,no-any-return]
