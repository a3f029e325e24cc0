"""engine=openai: generation by an OpenAI-compatible HTTP endpoint (vLLM, SGLang, `transformers
serve`, hosted APIs), for evaluating a served model in any harness (`python -m marl.evaluate
+exp=<task> engine=openai engine.base_url=... engine.model=...`). It generates only: it has no
`Learner` side, and `marl.train` refuses it (`trains = False`).

Contracts:
- `api=completions` sends marl's own prompt rule as text (`marl.engine.tokens.prompt_text`: the
  chat template for a chat model, the tiny model's prompt + newline), rendered with the model's
  tokenizer (`engine.tokenizer`, default `engine.model`; a local directory or a cached hub id,
  never downloaded); `api=chat` sends one user message and the server applies its template, with
  `chat_template_kwargs`.
- Greedy is temperature 0; a sampled request sends top_p 1 (marl's plain softmax) and
  `extra_body` for what only a server knows (vLLM's `top_k: -1`).
- The API key is read from the environment variable `api_key_env` names, at start; it is never
  in a config, trace or log.
- The `openai` client retries 408/409/429/5xx, timeouts and lost connections `max_retries` times
  with exponential backoff; a request that still fails raises `GenerateError`, which ends its
  episode as an `api_error` outcome (marl.rollout), never the evaluation.
- At most `max_concurrency` requests are in flight; the server's `usage` counts the tokens.
- The endpoint is probed when the engine is built (before the first episode): an unreachable
  server, a refused key, a model it does not serve or an API it lacks is refused with the URL
  and what was tried.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from marl.engine import EngineSpec, RolloutEngine
from marl.engine.stats import GenerateStats
from marl.types import Completion, GenerateError

APIS = ("completions", "chat")
KEYS = ("name", "base_url", "model", "api", "tokenizer", "api_key_env", "max_concurrency", "timeout_s",
        "max_retries", "chat_template_kwargs", "extra_body", "max_batch")


@dataclass(frozen=True)
class OpenAISettings:
    """conf/engine/openai.yaml, checked."""

    base_url: str
    model: str
    api: str = "completions"
    tokenizer: str | None = None   # api=completions: whose chat template renders prompts (None: model)
    api_key_env: str | None = "OPENAI_API_KEY"
    max_concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 3
    chat_template_kwargs: dict = field(default_factory=dict)
    extra_body: dict = field(default_factory=dict)

    @classmethod
    def read(cls, section: dict) -> "OpenAISettings":
        unknown = sorted(set(section) - set(KEYS))
        if unknown:
            key_hint = ("; the API key is never a setting: put it in the environment variable engine.api_key_env "
                        "names") if any("key" in k for k in unknown) else ""
            raise ValueError(f"engine.{unknown[0]}: engine=openai has no such setting; allowed: "
                             f"{', '.join(k for k in KEYS if k != 'name')}{key_hint}")
        for key in ("base_url", "model"):
            if not section.get(key):
                raise ValueError(f"engine=openai needs engine.{key}: e.g. engine.base_url=http://127.0.0.1:8000/v1 "
                                 "engine.model=Qwen/Qwen3-1.7B (the name the server serves)")
        url = str(section["base_url"]).rstrip("/")
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"engine.base_url={url}: not an http(s) URL; e.g. http://127.0.0.1:8000/v1")
        api = section.get("api", "completions")
        if api not in APIS:
            raise ValueError(f"engine.api={api!r}; allowed: completions (marl's prompt rule, rendered here with the "
                             "model's tokenizer), chat (one user message, the server's chat template)")
        env = section.get("api_key_env")
        if env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(env)):
            raise ValueError(f"engine.api_key_env={env!r}: the name of an environment variable (e.g. OPENAI_API_KEY), "
                             "not the key itself; null sends no key")
        s = cls(url, str(section["model"]), api, section.get("tokenizer"), env,
                section.get("max_concurrency", 8), float(section.get("timeout_s", 120.0)),
                section.get("max_retries", 3), dict(section.get("chat_template_kwargs") or {}),
                dict(section.get("extra_body") or {}))
        if isinstance(s.max_concurrency, bool) or not isinstance(s.max_concurrency, int) or s.max_concurrency < 1:
            raise ValueError(f"engine.max_concurrency={s.max_concurrency!r}: an integer >= 1 (requests in flight)")
        if isinstance(s.max_retries, bool) or not isinstance(s.max_retries, int) or s.max_retries < 0:
            raise ValueError(f"engine.max_retries={s.max_retries!r}: an integer >= 0")
        if s.timeout_s <= 0:
            raise ValueError(f"engine.timeout_s={s.timeout_s}: seconds > 0 per request")
        return s

    def api_key(self) -> str:
        """The key from the environment; "EMPTY" where none is set (local servers take any)."""
        return (os.environ.get(self.api_key_env) if self.api_key_env else None) or "EMPTY"

    def key_note(self) -> str:
        if not self.api_key_env:
            return "no key sent (engine.api_key_env=null)"
        return f"the key from ${self.api_key_env}" + ("" if os.environ.get(self.api_key_env) else " (unset: sent 'EMPTY')")


class OpenAIEngine(RolloutEngine):
    """One served model that every role's policy id generates with."""

    trains = False

    def __init__(self, spec: EngineSpec):
        from openai import OpenAI

        for name in ("httpx", "httpx2", "openai"):  # a line per request at INFO, under Hydra's logging
            logging.getLogger(name).setLevel(logging.WARNING)
        self.spec, self.s = spec, spec.settings
        if spec.kind != "shared":
            raise ValueError(f"engine=openai serves one model, which plays every role: policy=shared (got "
                             f"policy={spec.kind}; per-role policies come from a trained run: run=<dir>)")
        self.tok, self.chat = self._tokenizer()
        self.stats_ = GenerateStats()
        self.failed = 0
        self.sem: asyncio.Semaphore | None = None
        self.http = None  # the AsyncOpenAI client while a gather runs (bound to its event loop)
        probe = OpenAI(base_url=self.s.base_url, api_key=self.s.api_key(), max_retries=self.s.max_retries,
                       timeout=self.s.timeout_s)
        try:
            self.probe(probe)
        finally:
            probe.close()

    @property
    def policy_ids(self) -> tuple[str, ...]:
        return self.spec.policy_ids

    @classmethod
    def read_settings(cls, section: dict) -> OpenAISettings:
        return OpenAISettings.read(section)

    @classmethod
    def check_environment(cls, settings, n_policies: int) -> None:
        """Nothing local to check: the endpoint is probed when the engine is built."""

    def _tokenizer(self):
        from marl.engine.tokens import load_tokenizer

        path = self.s.tokenizer or (self.s.model if self.s.api == "completions" else None)
        if path is None:
            return None, False
        try:
            return load_tokenizer(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise ValueError(f"engine.tokenizer={path}{' (engine.model)' if not self.s.tokenizer else ''}: no tokenizer "
                             f"in that local directory or in the Hugging Face cache ({type(err).__name__}); marl "
                             "downloads nothing. engine.api=completions renders marl's prompt rule with the model's "
                             "tokenizer: set engine.tokenizer=<a local model directory or cached hub id> (`hf download "
                             "<id> --include 'tokenizer*'`), or use engine.api=chat (the server's template)") from None

    # ---- the endpoint ----------------------------------------------------------------------------

    def request(self, prompt: str, temperature: float, max_tokens: int) -> tuple[str, dict]:
        """(path, body) of one generate request."""
        sampling = {"temperature": float(temperature), "max_tokens": int(max_tokens)}
        if temperature > 0:
            sampling["top_p"] = 1.0
        if self.s.api == "completions":
            # api=completions always has the tokenizer (_tokenizer loads it or refuses the engine)
            return "completions", {"model": self.s.model, "prompt": self._render(prompt), **sampling}
        body = {"model": self.s.model, "messages": [{"role": "user", "content": prompt}], **sampling}
        if self.s.chat_template_kwargs:
            body["chat_template_kwargs"] = dict(self.s.chat_template_kwargs)
        return "chat", body

    def _render(self, prompt: str) -> str:
        from marl.engine.tokens import prompt_text

        return prompt_text(self.tok, self.chat, prompt, **self.s.chat_template_kwargs)

    def probe(self, client) -> None:
        """Refuse, with what was tried, an endpoint that cannot serve this evaluation."""
        import openai

        url, tried = self.s.base_url, []
        try:
            served = [m.id for m in client.models.list()]
            tried.append(f"GET {url}/models: {len(served)} models")
            if served and self.s.model not in served:
                raise ValueError(f"engine.model={self.s.model} is not served at {url}; it serves: {', '.join(served)}")
        except openai.APIConnectionError as err:
            raise ValueError(f"engine.base_url={url}: no server answered (GET {url}/models: {_describe(err)}, "
                             f"{1 + self.s.max_retries} tries, timeout {self.s.timeout_s:g} s). Start the server (e.g. "
                             "`vllm serve <model>`) or fix engine.base_url") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
            raise ValueError(f"{url} refused {self.s.key_note()}: {_describe(err)}") from None
        except openai.APIError as err:  # a server without /models (transformers serve answers 500)
            tried.append(f"GET {url}/models: {_describe(err)}")
        path, body = self.request("Hello", 0.0, 1)
        try:
            if path == "completions":
                client.completions.create(**_call_kw(body, self.s.extra_body))
            else:
                client.chat.completions.create(**_call_kw(body, self.s.extra_body))
        except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
            raise ValueError(f"{url} refused {self.s.key_note()}: {_describe(err)}") from None
        except openai.APIError as err:
            tried.append(f"POST {url}/{'chat/completions' if path == 'chat' else 'completions'} (model={self.s.model}, "
                         f"max_tokens=1): {_describe(err)}")
            raise ValueError(f"engine=openai could not generate with model {self.s.model} at {url} (after "
                             f"{1 + self.s.max_retries} tries each). Tried: {'; '.join(tried)}. "
                             f"{self._hint(err, path, tried)}") from None

    def _hint(self, err, path: str, tried: list[str]) -> str:
        """What a failed probe most likely means, by the status the server answered."""
        status = getattr(err, "status_code", None)
        if status == 404:
            models_404 = any("/models: HTTP 404" in t for t in tried)
            if models_404 and not self.s.base_url.rstrip("/").endswith("/v1"):
                return "The server has no such route: engine.base_url usually ends in /v1 (http://host:port/v1)."
            other = "engine.api=chat uses /chat/completions" if path == "completions" else "engine.api=completions uses /completions"
            return f"Is engine.model a name the server serves? ({other} instead.)"
        if status and status >= 500:
            return ("The server failed on the request; its own log says why (e.g. a model name it cannot load, or "
                    "engine.api=chat for a model without a chat template).")
        return "Is engine.model a name the server serves?"

    @asynccontextmanager
    async def session(self):
        """The HTTP client and the concurrency limit of one event loop's requests."""
        from openai import AsyncOpenAI

        opened = self.http is None
        if opened:
            self.http = AsyncOpenAI(base_url=self.s.base_url, api_key=self.s.api_key(),
                                    max_retries=self.s.max_retries, timeout=self.s.timeout_s)
            self.sem = asyncio.Semaphore(self.s.max_concurrency)
        try:
            yield self.http
        finally:
            if opened:
                await self.http.close()
                self.http = self.sem = None

    async def generate(self, prompt: str, prompt_ids: list[int], temperature: float) -> Completion:
        import openai

        path, body = self.request(prompt, temperature, self.spec.max_new_tokens)
        async with self.session() as http, self.sem:
            self.stats_.begin()
            new = 0
            try:
                if path == "completions":
                    r = await http.completions.create(**_call_kw(body, self.s.extra_body))
                    text = r.choices[0].text
                else:
                    r = await http.chat.completions.create(**_call_kw(body, self.s.extra_body))
                    text = r.choices[0].message.content or ""
                usage = (r.usage.prompt_tokens, r.usage.completion_tokens) if r.usage else self._count(prompt_ids, text)
                new = usage[1]
            except openai.APIError as err:  # after the client's retries
                self.failed += 1
                raise GenerateError(f"{path} request to {self.s.base_url} failed after {1 + self.s.max_retries} tries: "
                                    f"{_describe(err)}") from err
            finally:
                self.stats_.end(new)
        return Completion([], [], text, usage)

    def _count(self, prompt_ids: list[int], text: str) -> tuple[int, int]:
        """A server that sends no `usage`: the tokenizer's count, or 0 without one."""
        if self.tok is None:
            return 0, 0
        return len(prompt_ids), len(self.tok.encode(text, add_special_tokens=False))

    # ---- RolloutEngine ---------------------------------------------------------------------------

    def encode(self, policy_id: str, prompt: str) -> list[int]:
        """marl's prompt rule's ids where a tokenizer is known (kept in traces); [] without one."""
        from marl.engine.tokens import encode_prompt

        return [] if self.tok is None else encode_prompt(self.tok, self.chat, prompt)

    def client(self, policy_id: str) -> "_Client":
        if policy_id not in self.policy_ids:
            raise ValueError(f"no policy {policy_id!r} in this engine; policies: {list(self.policy_ids)}")
        return _Client(self)

    def max_prompt_tokens(self, policy_id: str) -> int | None:
        """None: the server refuses a prompt over its context, and that request becomes an api_error."""
        return None

    async def gather(self, jobs, on_done=None):
        async with self.session():  # one HTTP client for the batch, closed in its own event loop
            return await super().gather(jobs, on_done)

    def stats(self) -> dict[str, float]:
        return {**self.stats_.counts, "failed": float(self.failed)}

    def reset_stats(self) -> None:
        self.stats_.reset()
        self.failed = 0


class _Client:
    """The `GenerateClient` of engine=openai: sends `prompt` (the text), keeps the ids for the trace."""

    def __init__(self, engine: OpenAIEngine):
        self.engine = engine

    async def generate(self, prompt_ids: list[int], temperature: float, request_id: str | None = None,
                       prompt: str | None = None) -> Completion:
        if prompt is None:
            raise ValueError("engine=openai sends text: generate(..., prompt=<the prompt's text>) (marl.rollout does)")
        return await self.engine.generate(prompt, prompt_ids, temperature)


def _call_kw(body: dict, extra: dict) -> dict:
    """A request body as the `openai` client's arguments: what the OpenAI API does not define
    (`chat_template_kwargs`, engine.extra_body) goes in its `extra_body`."""
    kw = {k: v for k, v in body.items() if k != "chat_template_kwargs"}
    more = {**extra, **({"chat_template_kwargs": body["chat_template_kwargs"]} if "chat_template_kwargs" in body else {})}
    if more:
        kw["extra_body"] = more
    return kw


def _describe(err) -> str:
    """An `openai` error in one line: the HTTP status and the server's message, or the cause."""
    status = getattr(err, "status_code", None)
    msg = str(getattr(err, "message", None) or err).splitlines()[0][:300]
    response = getattr(err, "response", None)
    if status and msg.startswith("Error code") and response is not None:  # a body that is not OpenAI's JSON
        msg = response.text.strip()[:300] or response.reason_phrase
    if status is None and err.__cause__ is not None:
        msg = f"{msg} ({type(err.__cause__).__name__}: {str(err.__cause__)[:200]})"
    return f"HTTP {status}: {msg}" if status else msg
