"""Drives a running tracia-collector with the official Tracia Python SDK, unchanged.

Usage: python3 check_sdk.py BASE_URL API_KEY

The collector's OpenAI provider must answer a chat completion (the Rust test
`collector/tests/python_sdk.rs` points it at a fake replaying a recorded one). Exits 0
when every step works, else 1 with a message naming the step that failed.

Needs: pip install --no-deps tracia && pip install httpx pydantic
(the SDK's own dependency litellm is only used by run_local, which is not exercised).
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone


def fail(step: str, detail: object) -> None:
    print(f"check_sdk: FAILED at {step}: {detail}", file=sys.stderr)
    sys.exit(1)


def check(step: str, condition: bool, detail: object) -> None:
    if not condition:
        fail(step, detail)


def main() -> None:
    if len(sys.argv) != 3:
        fail("arguments", "usage: check_sdk.py BASE_URL API_KEY")
    base_url, api_key = sys.argv[1], sys.argv[2]

    try:
        from tracia import (
            CreatePromptOptions,
            CreateSpanPayload,
            Eval,
            EvaluateOptions,
            ListSpansOptions,
            LLMProvider,
            PromptMessage,
            RunOptions,
            Tracia,
            TraciaError,
            TraciaErrorCode,
            UpdatePromptOptions,
        )
    except ImportError as e:
        fail("import", f"{e} (pip install --no-deps tracia && pip install httpx pydantic)")

    step = "setup"
    client = Tracia(api_key=api_key, base_url=base_url)
    try:
        step = "wrong key is refused"
        intruder = Tracia(api_key="not-the-key", base_url=base_url)
        try:
            intruder.prompts.list()
            fail(step, "listing prompts with a wrong key succeeded")
        except TraciaError as e:
            check(step, e.code == TraciaErrorCode.UNAUTHORIZED and e.status_code == 401, repr(e))
        finally:
            intruder.close()

        step = "prompts.create"
        prompt = client.prompts.create(
            CreatePromptOptions(
                name="SDK Check Joke",
                description="made by check_sdk.py",
                content=[
                    PromptMessage(id="m1", role="user", content="Tell me a joke about {{topic}}")
                ],
                model="gpt-3.5-turbo",
                provider=LLMProvider.OPENAI,
            )
        )
        check(step, prompt.slug == "sdk-check-joke", prompt)
        check(step, prompt.current_version == 1, prompt)

        step = "prompts.create with a taken slug"
        try:
            client.prompts.create(
                CreatePromptOptions(
                    name="SDK Check Joke",
                    content=[PromptMessage(id="m1", role="user", content="again")],
                )
            )
            fail(step, "a duplicate slug was accepted")
        except TraciaError as e:
            check(step, e.code == TraciaErrorCode.CONFLICT and e.status_code == 409, repr(e))

        step = "prompts.get"
        got = client.prompts.get(prompt.slug)
        check(step, got.id == prompt.id and got.name == "SDK Check Joke", got)
        check(step, got.description == "made by check_sdk.py", got)

        step = "prompts.list"
        listed = client.prompts.list()
        check(step, [p.slug for p in listed] == [prompt.slug], listed)

        step = "prompts.update"
        updated = client.prompts.update(prompt.slug, UpdatePromptOptions(description="checked"))
        check(step, updated.description == "checked" and updated.current_version == 1, updated)

        step = "prompts.run"
        result = client.prompts.run(
            prompt.slug,
            {"topic": "opentelemetry"},
            RunOptions(tags=["sdk-check"], user_id="py-user", session_id="py-session"),
        )
        check(step, bool(result.text), result)
        check(step, result.prompt_version == 1, result)
        check(step, result.usage.total_tokens > 0, result)
        check(step, result.finish_reason == "stop", result)
        check(step, result.span_id.startswith("sp_") and result.trace_id.startswith("tr_"), result)
        check(step, result.messages is not None and len(result.messages) == 2, result)

        step = "prompts.run with a missing variable"
        try:
            client.prompts.run(prompt.slug)
            fail(step, "the run without variables succeeded")
        except TraciaError as e:
            check(step, e.code == TraciaErrorCode.MISSING_VARIABLES and "topic" in e.message, repr(e))

        step = "spans.create"
        created = client.spans.create(
            CreateSpanPayload(
                span_id="sp_00f067aa0ba902b7",
                trace_id="tr_4bf92f3577b34da6",
                model="gpt-4o",
                provider=LLMProvider.OPENAI,
                input={"messages": [{"role": "user", "content": "Hello"}]},
                output="Hi!",
                status="SUCCESS",
                latency_ms=812,
                input_tokens=10,
                output_tokens=5,
                total_tokens=15,
                tags=["sdk-check"],
            )
        )
        check(step, created.span_id == "sp_00f067aa0ba902b7", created)

        step = "spans.list"
        since = datetime.now(timezone.utc) - timedelta(hours=1)
        spans = client.spans.list(
            ListSpansOptions(prompt_slug=prompt.slug, start_date=since, tags=["sdk-check"])
        ).spans
        check(step, [s.span_id for s in spans] == [result.span_id], spans)
        everything = client.spans.list(ListSpansOptions(tags=["sdk-check"], limit=10)).spans
        check(step, len(everything) == 2, everything)

        step = "spans.get"
        span = client.spans.get(result.span_id)
        check(step, span.prompt_slug == prompt.slug and span.prompt_version == 1, span)
        check(step, span.output == result.text and span.status == "SUCCESS", span)
        check(step, span.user_id == "py-user" and span.session_id == "py-session", span)
        check(step, span.variables == {"topic": "opentelemetry"}, span)
        check(
            step,
            span.input["messages"][0]["content"] == "Tell me a joke about opentelemetry",
            span,
        )

        step = "spans.evaluate"
        evaluation = client.spans.evaluate(
            result.span_id, EvaluateOptions(evaluator="quality", value=Eval.POSITIVE, note="ok")
        )
        check(step, evaluation.value == 1 and evaluation.evaluator_key == "quality", evaluation)

        step = "prompts.delete"
        client.prompts.delete(prompt.slug)
        try:
            client.prompts.get(prompt.slug)
            fail(step, "the deleted prompt is still there")
        except TraciaError as e:
            check(step, e.code == TraciaErrorCode.NOT_FOUND and e.status_code == 404, repr(e))
    except TraciaError as e:
        fail(step, repr(e))
    except Exception as e:  # a response the SDK's models refuse, a network error, ...
        fail(step, f"{type(e).__name__}: {e}")
    finally:
        client.close()
    print("check_sdk: OK (prompts create/get/list/update/run/delete, spans create/list/get/evaluate)")


if __name__ == "__main__":
    main()
