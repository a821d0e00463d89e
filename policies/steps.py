"""Given what a session already proved, is the decision met, what to ask next, or refuse."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from policies.levels import (
    ACCESS_DENIED,
    LOGIN_REQUIRED,
    UNMET_AUTHENTICATION_REQUIREMENTS,
    Level,
    Reason,
    Refused,
)
from policies.request import LevelDecision


class FactorKind(StrEnum):
    PASSWORD = "pwd"
    DEVICE_KEY = "hwk"  # PKI-2FA signature or WebAuthn assertion by a device key
    EID = "eid"  # German eID card through an eID connector
    WALLET = "wallet"  # EU digital identity wallet: PID over OpenID4VP (docs/wallet.md)


class Step(StrEnum):
    PASSWORD = "password"
    DEVICE = "device"  # PKI-2FA with an enrolled virtual smartcard
    WEBAUTHN = "webauthn"  # attested WebAuthn authenticator
    EID = "eid"


@dataclass(frozen=True)
class Factor:
    """One factor the session holds. ``level``: for a device key, the max level its
    attestation allows (None or low: a software key); for eID, the level the connector
    reported; ignored for passwords."""

    kind: FactorKind
    auth_time: datetime
    level: Level | None = None


@dataclass(frozen=True)
class SessionFacts:
    factors: tuple[Factor, ...] = ()


@dataclass(frozen=True)
class DeviceFacts:
    """An active (not revoked, not expired) enrolled virtual smartcard."""

    device_id: str
    max_level: Level | None


@dataclass(frozen=True)
class WebAuthnFacts:
    """A registered WebAuthn credential; ``max_level`` from its attestation."""

    credential_id: str
    max_level: Level | None


@dataclass(frozen=True)
class AccountFacts:
    """``eid_level``: the level an eID login reaches for this account (a linked card, or one
    the citizen can link through the configured connector); None when there is no eID route."""

    email_verified: bool
    has_password: bool = True
    devices: tuple[DeviceFacts, ...] = ()
    webauthn: tuple[WebAuthnFacts, ...] = ()
    eid_level: Level | None = None


@dataclass(frozen=True)
class Satisfied:
    """Report these in the ID token (OIDC Core §2): ``acr``, ``amr`` (RFC 8176 §2),
    ``auth_time`` (the oldest factor counted, so a relying party's max_age check is honest)."""

    level: Level
    acr: str
    amr: tuple[str, ...]
    auth_time: datetime
    reason: Reason


@dataclass(frozen=True)
class AskStep:
    """Ask for ``step`` next; ``alternatives`` are other steps that would also progress."""

    step: Step
    alternatives: tuple[Step, ...]
    goal: Level
    reason: Reason


StepDecision = Satisfied | AskStep | Refused


def _require_aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be an aware datetime")


def _counted(decision: LevelDecision, session: SessionFacts, now: datetime) -> tuple[Factor, ...]:
    """The factors fresh enough for this request."""
    cutoff: datetime | None = None
    if decision.max_age is not None:
        # OIDC Core §3.1.2.1 max_age: elapsed time since the End-User actively authenticated.
        # Factors completed while serving this very request always count, or a slow citizen
        # facing max_age=0 or a short max_age could never finish.
        cutoff = min(now - timedelta(seconds=decision.max_age), decision.requested_at)
    if decision.force_reauth:
        # OIDC Core §3.1.2.1 prompt=login: authentication from before this request is stale.
        cutoff = decision.requested_at if cutoff is None else max(cutoff, decision.requested_at)
    counted = []
    for factor in session.factors:
        _require_aware(factor.auth_time, "factor auth_time")
        if factor.auth_time > now:
            continue  # from the future: a clock or storage fault, never trusted
        if cutoff is not None and factor.auth_time < cutoff:
            continue
        counted.append(factor)
    return tuple(counted)


# Identity factors: the eID card and the wallet's PID both prove who the person is (Step.EID).
_IDENTITY = (FactorKind.EID, FactorKind.WALLET)


def _reaches(factor: Factor, level: Level) -> bool:
    return factor.level is not None and factor.level >= level


def _level_of(factors: tuple[Factor, ...]) -> Level | None:
    """What the factors prove together (ARCHITECTURE.md, levels of assurance)."""
    reached: list[Level] = [f.level for f in factors if f.kind in _IDENTITY and f.level]
    if any(f.kind is FactorKind.PASSWORD for f in factors):
        reached.append(Level.LOW)
        if any(f.kind is FactorKind.DEVICE_KEY and _reaches(f, Level.SUBSTANTIAL) for f in factors):
            reached.append(Level.SUBSTANTIAL)
    return max(reached) if reached else None


def _amr(factors: tuple[Factor, ...]) -> tuple[str, ...]:
    """RFC 8176 §2 method references for the factors counted."""
    methods: set[str] = set()
    categories: set[str] = set()
    for factor in factors:
        if factor.kind is FactorKind.PASSWORD:
            methods.add("pwd")
            categories.add("knowledge")
        elif factor.kind is FactorKind.DEVICE_KEY:
            # RFC 8176 §2: hwk = hardware-secured key, swk = software-secured key.
            methods.add("hwk" if _reaches(factor, Level.SUBSTANTIAL) else "swk")
            categories.add("possession")
        elif factor.kind is FactorKind.WALLET:
            # RFC 8176 §2: hwk (the key-binding key in the wallet's secure hardware), pin (the
            # wallet's user authentication, HAIP 1.0); "wallet" names the route (not registered).
            methods.update(("hwk", "pin", "wallet"))
            categories.update(("possession", "knowledge"))
        else:
            methods.update(("sc", "pin"))  # RFC 8176 §2: smart card, PIN
            categories.update(("possession", "knowledge"))
    if len(categories) > 1:
        methods.add("mfa")  # RFC 8176 §2: more than one kind of factor
    return tuple(sorted(methods))


def _routes(goal: Level, account: AccountFacts) -> list[tuple[Step, ...]]:
    """The ways this account can reach ``goal``, in order of preference."""
    routes: list[tuple[Step, ...]] = []
    if goal == Level.LOW and account.has_password:
        routes.append((Step.PASSWORD,))
    if goal == Level.SUBSTANTIAL and account.has_password:
        if any(d.max_level is not None and d.max_level >= goal for d in account.devices):
            routes.append((Step.PASSWORD, Step.DEVICE))
        if any(w.max_level is not None and w.max_level >= goal for w in account.webauthn):
            routes.append((Step.PASSWORD, Step.WEBAUTHN))
    if account.eid_level is not None and account.eid_level >= goal:
        routes.append((Step.EID,))
    return routes


def _reachable(account: AccountFacts) -> Level | None:
    for level in (Level.HIGH, Level.SUBSTANTIAL, Level.LOW):
        if _routes(level, account):
            return level
    return None


def _missing(route: tuple[Step, ...], factors: tuple[Factor, ...], goal: Level) -> list[Step]:
    missing = []
    for step in route:
        if step is Step.PASSWORD:
            done = any(f.kind is FactorKind.PASSWORD for f in factors)
        elif step is Step.EID:
            done = any(f.kind in _IDENTITY and _reaches(f, goal) for f in factors)
        else:
            done = any(f.kind is FactorKind.DEVICE_KEY and _reaches(f, goal) for f in factors)
        if not done:
            missing.append(step)
    return missing


def next_step(
    decision: LevelDecision, session: SessionFacts, account: AccountFacts, now: datetime
) -> StepDecision:
    """Satisfied (with what to report), the one step to ask next, or refused."""
    _require_aware(now, "now")
    if decision.refusal is not None:
        return decision.refusal
    if not account.email_verified:
        # ARCHITECTURE.md: even low needs a password on a verified e-mail address.
        return Refused(ACCESS_DENIED, Reason("email_unverified", "the account's e-mail is not verified yet"))

    counted = _counted(decision, session, now)
    achieved = _level_of(counted)
    if achieved is not None and achieved >= decision.target:
        return _satisfied(decision, achieved, counted, decision.reason)

    reachable = _reachable(account)
    if reachable is None or reachable < decision.minimum:
        # OIDC Core §5.5.1.1 / OIDC UAR 1.0 §2: requirement cannot be met.
        label = reachable.label if reachable else "no level"
        return Refused(
            UNMET_AUTHENTICATION_REQUIREMENTS,
            Reason(
                "no_method_for_level",
                f"{decision.reason.text}; this account can reach {label}",
            ),
        )
    goal = min(decision.target, reachable)
    best_effort = goal < decision.target
    if achieved is not None and achieved >= goal:
        # OIDC Core §3.1.2.1: acr_values are voluntary; we did our best.
        return _satisfied(
            decision,
            achieved,
            counted,
            Reason(
                "best_effort",
                f"the client prefers {decision.target.label}; this account reaches {goal.label}",
            ),
        )
    if decision.prompt_none:
        # OIDC Core §3.1.2.6: no UI may be shown, and authentication is needed.
        return Refused(LOGIN_REQUIRED, Reason("interaction_needed", f"{goal.label} needs a login step"))

    steps: list[Step] = []
    for route in _routes(goal, account):
        first = _missing(route, counted, goal)[0]
        if first not in steps:
            steps.append(first)
    if best_effort:
        reason = Reason(
            "best_effort",
            f"the client prefers {decision.target.label}; this account reaches {goal.label}",
        )
    elif len(counted) < len(session.factors):
        reason = Reason(
            "reauthentication_required",
            "some factors are too old for max_age or prompt=login and must be repeated",
        )
    elif achieved is None:
        reason = decision.reason
    else:
        reason = Reason("step_up", f"the session holds {achieved.label}; {decision.reason.text}")
    return AskStep(step=steps[0], alternatives=tuple(steps[1:]), goal=goal, reason=reason)


def _satisfied(
    decision: LevelDecision, achieved: Level, counted: tuple[Factor, ...], reason: Reason
) -> Satisfied:
    return Satisfied(
        level=achieved,
        acr=decision.acr_for(achieved),
        amr=_amr(counted),
        auth_time=min(f.auth_time for f in counted),
        reason=reason,
    )
