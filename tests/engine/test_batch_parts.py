"""The parts of batch mode that need no server: the budget's adopt, batch prices, the state
file, the settings' checks."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from opro.engine.batch import BatchSettings
from opro.engine.batch_state import BatchEntry, BatchStateError, BatchStateFile
from opro.engine.budget import Budget
from opro.engine.ledger import LEDGER, recording
from opro.engine.model import Price
from opro.engine.prices import batch_price, known_price
from opro.engine.spend import Spend
from opro.errors import SettingsError

WORST = Spend(10, 5000, 2000, 0.004)


def test_adopt_turns_prior_spend_back_into_a_reservation() -> None:
    budget = Budget(max_usd=0.01, spent=Spend(12, 6000, 2500, 0.005))
    reservation = budget.adopt(WORST)
    assert reservation is not None
    assert budget.spent == Spend(2, 1000, 500, pytest.approx(0.001))  # type: ignore[arg-type]
    assert budget.reserved == WORST
    budget.settle(reservation, Spend(10, 3000, 400, 0.002))
    assert budget.spent.cost_usd == pytest.approx(0.003) and budget.reserved.calls == 0


def test_adopt_refuses_what_the_prior_spend_does_not_hold() -> None:
    budget = Budget(spent=Spend(1, 10, 10, 0.001))
    assert budget.adopt(WORST) is None
    assert budget.spent == Spend(1, 10, 10, 0.001) and budget.reserved == Spend()


async def test_a_session_that_only_adopted_still_records_its_spend(tmp_path: Path) -> None:
    """Without a write of its own, a resumed session used to leave the ledger untouched."""
    (tmp_path / LEDGER).write_bytes(
        orjson.dumps({"format": 1, "settled": Spend().to_dict(), "bound": WORST.to_dict()})
    )
    budget = Budget(max_usd=1.0)
    async with recording(budget, tmp_path, resume=True):
        reservation = budget.adopt(WORST)
        assert reservation is not None
        budget.settle(reservation, Spend(10, 100, 10, 0.0001))
    data = orjson.loads((tmp_path / LEDGER).read_bytes())
    assert data["settled"]["cost_usd"] == pytest.approx(0.0001)
    assert data["bound"]["cost_usd"] == pytest.approx(0.0001)


def test_batch_prices_are_half_the_live_ones_for_the_vendors() -> None:
    live = known_price("openai/gpt-4o-mini")
    assert live is not None
    assert batch_price("openai/gpt-4o-mini", live) == Price(0.075, 0.30)
    claude = known_price("anthropic/claude-haiku-4-5")
    assert batch_price("anthropic/claude-haiku-4-5", claude) == Price(0.5, 2.5)
    # A compatible server's batch API is not OpenAI's: its price is what the user gave.
    assert batch_price("openai-compatible/m", Price(1.0, 2.0)) == Price(1.0, 2.0)
    assert batch_price("openai/unknown", None) is None


def test_state_file_round_trip(tmp_path: Path) -> None:
    file = BatchStateFile(tmp_path)
    assert file.load() == []
    entry = BatchEntry.new("openai/m", ["a" * 64, "b" * 64], WORST, 2)
    entry.status, entry.batch_id = "submitted", "batch_1"
    file.save([entry])
    [back] = file.load()
    assert back.to_dict() == entry.to_dict()
    assert len(entry.token) == 24 and entry.token != BatchEntry.new("x", [], WORST, 1).token


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"format": 2, "batches": []}',
        b'{"format": 1, "batches": [{"token": "t"}]}',
        b'{"format": 1, "batches": "none"}',
    ],
)
def test_damaged_state_file_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "batches.json").write_bytes(content)
    with pytest.raises(BatchStateError, match=r"damaged.*paid twice"):
        BatchStateFile(tmp_path).load()


def test_bad_status_in_state_file(tmp_path: Path) -> None:
    entry = BatchEntry.new("openai/m", [], WORST, 1).to_dict()
    entry["status"] = "maybe"
    (tmp_path / "batches.json").write_bytes(orjson.dumps({"format": 1, "batches": [entry]}))
    with pytest.raises(BatchStateError):
        BatchStateFile(tmp_path).load()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"retry": "sometimes"},
        {"rounds": 0},
        {"poll_first_s": math.nan},
        {"poll_max_s": -1.0},
        {"poll_max_s": math.inf},
    ],
)
def test_batch_settings_are_checked(kwargs: dict[str, object]) -> None:
    with pytest.raises(SettingsError):
        BatchSettings(**kwargs)  # type: ignore[arg-type]


async def test_a_provider_without_a_batch_api_is_refused(tmp_path: Path) -> None:
    from opro.engine.batch import BatchRunner
    from opro.engine.engine import Engine
    from opro.providers.errors import ConfigurationError

    async with Engine(use_cache=False) as engine:
        model = engine.model("simulated/s")
        with pytest.raises(ConfigurationError, match="has none: drop --batch"):
            BatchRunner(model, tmp_path)
