"""The spending cap: how many images (or CNY) a runner may spend, and the ledger that keeps it.

Owns the arithmetic only: a job reserves what it could cost before it is submitted, and settles
to what the service billed when it ends. Never submits, sleeps or reads files.

``Spending`` is the seam the runner reserves through: ``LocalSpending`` keeps a ``BudgetLedger``
in this process; a shared store (``dashscope_async.redis.RedisJournal``) keeps one for a fleet.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Protocol

import attrs

from ._checks import check_whole_number, wrong_type
from ._config import MODELS
from ._errors import ValidationError

__all__ = ["Budget", "BudgetLedger", "LocalSpending", "Spending"]


def _amount(field: str, value: object) -> Decimal:
    """An amount of CNY: a Decimal, an int, a float or a numeric string, finite, at least 0."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise wrong_type(field, "an amount of CNY (a Decimal, a number or a string)", value)
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        raise ValidationError(field, f"not an amount: {str(value)[:40]!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValidationError(field, f"must be a finite amount of at least 0, not {value!r:.40}")
    return amount


def _to_decimal(value: Decimal | float | int | str | None) -> Decimal | None:
    return None if value is None else _amount("budget.cny", value)


def _list_prices() -> dict[str, Decimal]:
    return {name: spec.price_per_image for name, spec in MODELS.items()}


def _to_prices(prices: Mapping[str, Decimal | float | str]) -> dict[str, Decimal]:
    if not isinstance(prices, Mapping):
        raise wrong_type("budget.prices", "a mapping of model names to CNY per image", prices)
    return {name: _amount(f"budget.prices[{name!r}]", price) for name, price in prices.items()}


def _check_images(
    instance: object, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None:
        check_whole_number("budget.images", value, minimum=0, unit="images")


@attrs.frozen
class Budget:
    """A spending cap for a runner: images, CNY, or both (whichever is reached first).

    The service bills successful images only; the runner reserves the images a job asks for
    before submitting it, so it never submits past the cap, and gives back what was not billed.

    Args:
        images: at most this many images.
        cny: at most this much money, at ``prices`` (default: the model registry's list prices).
        prices: CNY per image by model name, for accounts with other prices.

    Example:
        ```python
        async with ds.AsyncTaskRunner(client, budget=ds.Budget(cny="5.00")) as runner:
            ...
        ```
    """

    images: int | None = attrs.field(default=None, validator=_check_images)
    cny: Decimal | None = attrs.field(default=None, converter=_to_decimal)
    prices: Mapping[str, Decimal] = attrs.field(
        factory=lambda: _list_prices(), converter=_to_prices
    )

    def price(self, model: str) -> Decimal:
        """CNY per image of ``model``."""
        try:
            return self.prices[model]
        except KeyError:
            raise ValidationError("budget.prices", f"no price known for model {model!r}") from None

    def cost(self, model: str, images: int) -> Decimal:
        """What ``images`` images of ``model`` cost."""
        return self.price(model) * images


@attrs.define
class BudgetLedger:
    """What a runner has spent and reserved against its ``Budget``.

    Example:
        ```python
        async with ds.AsyncTaskRunner(client, budget=ds.Budget(images=100)) as runner:
            ...
            print(runner.ledger.spent_images, runner.ledger.spent_cny)
        ```
    """

    budget: Budget
    spent_images: int = 0
    spent_cny: Decimal = Decimal(0)
    reserved_images: int = 0
    reserved_cny: Decimal = Decimal(0)

    def fits_now(self, model: str, images: int) -> bool:
        """Whether a job's worst-case cost fits beside what is spent and reserved now."""
        if (
            self.budget.images is not None
            and self.spent_images + self.reserved_images + images > self.budget.images
        ):
            return False
        cost = self.budget.cost(model, images)
        return (
            self.budget.cny is None or self.spent_cny + self.reserved_cny + cost <= self.budget.cny
        )

    def try_reserve(self, model: str, images: int) -> bool:
        """Reserve a job's worst-case cost; False (nothing reserved) if that would pass the cap."""
        if not self.fits_now(model, images):
            return False
        self.reserved_images += images
        self.reserved_cny += self.budget.cost(model, images)
        return True

    def could_afford(self, model: str, images: int) -> bool:
        """Whether a job could fit at all, if every reservation were given back.

        A job that fails this check can be turned away before its files are uploaded.
        """
        if self.budget.images is not None and self.spent_images + images > self.budget.images:
            return False
        cost = self.budget.cost(model, images)
        return self.budget.cny is None or self.spent_cny + cost <= self.budget.cny

    def settle(self, model: str, reserved: int, billed: int) -> None:
        """Replace a reservation by what the service billed (successful images only)."""
        self.reserved_images -= reserved
        self.reserved_cny -= self.budget.cost(model, reserved)
        self.record(model, billed)

    def record(self, model: str, billed: int) -> None:
        """Count images billed outside a reservation (for example, found in a journal)."""
        self.spent_images += billed
        self.spent_cny += self.budget.cost(model, billed)


class Spending(Protocol):
    """Where a runner reserves a job's worst case before submitting it, and settles afterwards.

    ``job`` names the reservation: a job reserved twice (a worker died and another took it up)
    holds one reservation, and a job settled twice is billed once.
    """

    @property
    def budget(self) -> Budget:
        """The cap."""
        ...

    async def could_afford(self, model: str, images: int) -> bool:
        """Whether the job could fit at all, if every reservation were given back."""
        ...

    async def fits_now(self, model: str, images: int) -> bool:
        """Whether the job fits beside what is spent and reserved now."""
        ...

    async def try_reserve(self, job: str, model: str, images: int) -> bool:
        """Reserve the job's worst case; False (nothing reserved) if that would pass the cap."""
        ...

    async def settle(self, job: str, model: str, reserved: int, billed: int) -> None:
        """Replace the job's reservation by what was billed (0: give it all back)."""
        ...

    async def settle_replayed(self, job: str, model: str, billed: int) -> None:
        """A job found finished in the store: settle its reservation if the worker that
        finished it died before settling (a job settled before is not billed again)."""
        ...


@attrs.define
class LocalSpending:
    """``Spending`` in this process: a ``BudgetLedger`` behind the async seam."""

    ledger: BudgetLedger

    @property
    def budget(self) -> Budget:
        return self.ledger.budget

    async def could_afford(self, model: str, images: int) -> bool:
        return self.ledger.could_afford(model, images)

    async def fits_now(self, model: str, images: int) -> bool:
        return self.ledger.fits_now(model, images)

    async def try_reserve(self, job: str, model: str, images: int) -> bool:
        return self.ledger.try_reserve(model, images)

    async def settle(self, job: str, model: str, reserved: int, billed: int) -> None:
        self.ledger.settle(model, reserved, billed)

    async def settle_replayed(self, job: str, model: str, billed: int) -> None:
        # One process: the ledger started from the journal's spend, which counts this job.
        return None
