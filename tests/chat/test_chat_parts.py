"""The chat's parts that need no server: trimming, rate limits, history stores, settings."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from signalr_chat.ai import ChatMessage
from signalr_chat.app.settings import Settings
from signalr_chat.chat.history import InMemoryHistoryStore
from signalr_chat.chat.rate_limit import RateLimiter
from signalr_chat.chat.sqlite_history import SqliteHistoryStore
from signalr_chat.chat.trimming import MESSAGE_OVERHEAD, REPLY_PRIMING, TooLongForModel, fit_to_budget
from tests.support.paths import ROOT

SYSTEM: ChatMessage = {"role": "system", "content": "sys"}


def words(text: str) -> int:
    return len(text.split())


def turns(n: int) -> list[ChatMessage]:
    """n alternating user/assistant messages of 10 words each."""
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": " ".join([f"m{i}"] * 10)} for i in range(n)]


def cost(messages: list[ChatMessage]) -> int:
    return REPLY_PRIMING + sum(words(m["content"]) + MESSAGE_OVERHEAD for m in messages)


class TestFitToBudget:
    def test_everything_fits(self) -> None:
        history = turns(6)
        new: ChatMessage = {"role": "user", "content": "hi"}
        assert fit_to_budget(SYSTEM, history, new, 10_000, words) == [SYSTEM, *history, new]

    def test_drops_oldest_first_and_keeps_system_and_new_message(self) -> None:
        history = turns(10)
        new: ChatMessage = {"role": "user", "content": "hi"}
        budget = cost([SYSTEM, new]) + 4 * (10 + MESSAGE_OVERHEAD)
        prompt = fit_to_budget(SYSTEM, history, new, budget, words)
        assert prompt == [SYSTEM, *history[-4:], new]
        assert cost(prompt) <= budget

    def test_kept_history_starts_with_a_user_turn(self) -> None:
        history = turns(10)
        new: ChatMessage = {"role": "user", "content": "hi"}
        budget = cost([SYSTEM, new]) + 3 * (10 + MESSAGE_OVERHEAD)  # room for 3: would start at an answer
        prompt = fit_to_budget(SYSTEM, history, new, budget, words)
        assert prompt == [SYSTEM, *history[-2:], new]
        assert prompt[1]["role"] == "user"

    def test_message_alone_too_big(self) -> None:
        new: ChatMessage = {"role": "user", "content": "w " * 100}
        with pytest.raises(TooLongForModel):
            fit_to_budget(SYSTEM, [], new, 50, words)


class TestRateLimiter:
    def test_window_slides(self) -> None:
        now = [0.0]
        limiter = RateLimiter(2, 10, clock=lambda: now[0])
        assert limiter.hit("a") == 0
        now[0] = 1
        assert limiter.hit("a") == 0
        now[0] = 2
        assert limiter.hit("a") == pytest.approx(8)
        assert limiter.hit("b") == 0, "keys are independent"
        now[0] = 10.5
        assert limiter.hit("a") == 0, "the first hit left the window"

    def test_zero_turns_it_off(self) -> None:
        limiter = RateLimiter(0, 10)
        assert all(limiter.hit("a") == 0 for _ in range(100))

    def test_idle_keys_are_swept(self) -> None:
        now = [0.0]
        limiter = RateLimiter(5, 10, clock=lambda: now[0])
        for user in ("a", "b", "c"):
            limiter.hit(user)
        now[0] = 8
        limiter.hit("d")
        now[0] = 15  # a, b, c left the window; d has not
        limiter.hit("e")
        assert len(limiter) == 2

    def test_forget(self) -> None:
        limiter = RateLimiter(1, 100)
        limiter.hit("a")
        limiter.forget("a")
        assert limiter.hit("a") == 0
        assert len(limiter) == 1


async def test_memory_store_keeps_last_n() -> None:
    store = InMemoryHistoryStore(keep=4)
    await store.append("c", turns(6))
    assert await store.load("c") == turns(6)[-4:]
    await store.clear("c")
    assert await store.load("c") == []
    assert len(store) == 0


async def test_sqlite_store_survives_reopen_and_trims(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "history.sqlite3"
    store = SqliteHistoryStore(path, keep=4)
    await store.open()
    await store.append("user:ann", turns(2))
    await store.append("user:ann", turns(6)[2:])
    await store.append("user:bob", [{"role": "user", "content": "ünïcödé ✓"}])
    await store.close()

    reopened = SqliteHistoryStore(path, keep=4)
    await reopened.open()
    try:
        assert await reopened.load("user:ann") == turns(6)[-4:]
        assert await reopened.load("user:bob") == [{"role": "user", "content": "ünïcödé ✓"}]
        await reopened.clear("user:ann")
        assert await reopened.load("user:ann") == []
        assert await reopened.load("user:bob") != []
    finally:
        await reopened.close()


@pytest.mark.parametrize("opted_in", [False, True])
async def test_user_content_reaches_the_debug_log_only_when_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, opted_in: bool
) -> None:
    caplog.set_level(logging.DEBUG)
    store = SqliteHistoryStore(tmp_path / "h.sqlite3", keep=4, log_queries=opted_in)
    await store.open()
    try:
        await store.append("user:ann", [{"role": "user", "content": "my secret plan 7f3a"}])
        assert await store.load("user:ann") != []
    finally:
        await store.close()
    assert ("secret plan 7f3a" in caplog.text) is opted_in


class TestSettings:
    def test_deployment_aliases(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("AZURE_OPENAI_DEPLOYMENT", "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME", "AZURE_OPENAI_DEPLOYMENT_NAME"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT_NAME", "gpt-4o")
        assert Settings(_env_file=None).azure_openai_deployment == "gpt-4o"  # type: ignore[call-arg]
        monkeypatch.setenv("AZURE_OPENAI_CHAT_DEPLOYMENT_NAME", "chat")
        assert Settings(_env_file=None).azure_openai_deployment == "chat"  # type: ignore[call-arg]

    def test_provider_choice(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("AZURE_OPENAI_ENDPOINT", "OPENAI_BASE_URL", "OPENAI_API_KEY", "AI_PROVIDER"):
            monkeypatch.delenv(name, raising=False)
        assert Settings(_env_file=None).provider() == "local"  # type: ignore[call-arg]
        monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
        assert Settings(_env_file=None).provider() == "openai"  # type: ignore[call-arg]
        monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "http://127.0.0.1:1")
        assert Settings(_env_file=None).provider() == "azure"  # type: ignore[call-arg]
        monkeypatch.setenv("AI_PROVIDER", "local")
        assert Settings(_env_file=None).provider() == "local"  # type: ignore[call-arg]

    def test_dotenv_is_read(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("MAX_MESSAGE_LENGTH", raising=False)
        env = tmp_path / ".env"
        env.write_text("MAX_MESSAGE_LENGTH=123\n")
        assert Settings(_env_file=env).max_message_length == 123  # type: ignore[call-arg]

    def test_reply_must_fit_the_context(self) -> None:
        with pytest.raises(ValueError, match="ai_max_output_tokens must leave room"):
            Settings(_env_file=None, ai_context_tokens=1000, ai_max_output_tokens=1000)  # type: ignore[call-arg]
        with pytest.raises(ValueError, match="local_max_output_tokens must leave room"):
            Settings(_env_file=None, local_context_tokens=512, local_max_output_tokens=500)  # type: ignore[call-arg]

    def test_secrets_never_in_repr(self) -> None:
        settings = Settings(_env_file=None, azure_openai_api_key="sekrit-key", auth_jwt_secret="sekrit-jwt")  # type: ignore[call-arg]
        assert "sekrit" not in repr(settings)
        assert "sekrit" not in str(settings.model_dump())

    def test_help_lists_every_setting(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "signalr_chat", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        for name in Settings.model_fields:
            assert f"--{name.replace('_', '-')}" in result.stdout, name
