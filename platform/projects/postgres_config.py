"""The Postgres parameters a team may set on its own database (the Management API's
PostgresConfigResponse / UpdatePostgresConfigBody), and their checks.

Every value is checked here, before anything is stored or sent: its type, its unit, its range
(PostgreSQL's own, narrowed where a value would leave the database unusable), and for memory
what the project's host has. What PostgreSQL still refuses is refused by the agent, which then
keeps the old configuration running (agent.drivers.settings).
"""

import re
from dataclasses import dataclass

from django.core.exceptions import ValidationError

KB = 1024
INT_MAX = 2**31 - 1
MEMORY_UNITS = {"B": 1, "kB": KB, "MB": KB**2, "GB": KB**3, "TB": KB**4}
TIME_UNITS_MS = {"us": 0.001, "ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
_QUANTITY = re.compile(r"^(-?\d+)\s*([A-Za-z]*)$")


@dataclass(frozen=True)
class Parameter:
    kind: str  # memory | time | int | bool | enum
    # memory: the unit a bare number means, and the range in bytes; time: likewise in
    # milliseconds; int: the range itself.
    unit: str = ""
    low: float = 0
    high: float = INT_MAX
    choices: tuple[str, ...] = ()
    # The share of the host's memory one value may take (memory parameters).
    of_memory: float = 1.0
    # -1 (no limit) is allowed besides the range.
    unlimited: bool = False


PARAMETERS = {
    "checkpoint_timeout": Parameter("time", "s", 30_000, 86_400_000),
    "effective_cache_size": Parameter("memory", "8kB", 8 * KB, 2 * KB**4),
    "hot_standby_feedback": Parameter("bool"),
    "logical_decoding_work_mem": Parameter("memory", "kB", 64 * KB, 2 * KB**4, of_memory=0.25),
    "maintenance_work_mem": Parameter("memory", "kB", KB**2, 2 * KB**4, of_memory=0.25),
    "max_connections": Parameter("int", low=10, high=10_000),
    "max_locks_per_transaction": Parameter("int", low=10, high=100_000),
    "max_parallel_maintenance_workers": Parameter("int", low=0, high=1024),
    "max_parallel_workers": Parameter("int", low=0, high=1024),
    "max_parallel_workers_per_gather": Parameter("int", low=0, high=1024),
    "max_replication_slots": Parameter("int", low=0, high=262_143),
    "max_slot_wal_keep_size": Parameter("memory", "MB", 0, 2 * KB**5, unlimited=True),
    "max_standby_archive_delay": Parameter("time", "ms", 0, INT_MAX, unlimited=True),
    "max_standby_streaming_delay": Parameter("time", "ms", 0, INT_MAX, unlimited=True),
    "max_wal_senders": Parameter("int", low=0, high=262_143),
    "max_wal_size": Parameter("memory", "MB", 2 * KB**2, 2 * KB**5),
    "max_worker_processes": Parameter("int", low=1, high=262_143),
    "session_replication_role": Parameter("enum", choices=("origin", "replica", "local")),
    "shared_buffers": Parameter("memory", "8kB", 128 * KB, 2 * KB**4, of_memory=0.5),
    "statement_timeout": Parameter("time", "ms", 0, INT_MAX),
    "track_activity_query_size": Parameter("memory", "B", 100, 1024 * KB),
    "track_commit_timestamp": Parameter("bool"),
    "wal_keep_size": Parameter("memory", "MB", 0, 2 * KB**5),
    "wal_sender_timeout": Parameter("time", "ms", 0, INT_MAX),
    "work_mem": Parameter("memory", "kB", 64 * KB, 2 * KB**4, of_memory=0.25),
}


def _size(value: int) -> str:
    for unit in ("TB", "GB", "MB", "kB"):
        if value >= MEMORY_UNITS[unit] and value % MEMORY_UNITS[unit] == 0:
            return f"{value // MEMORY_UNITS[unit]}{unit}"
    return f"{value}B"


def _unit_bytes(unit: str) -> int:
    return 8 * KB if unit == "8kB" else MEMORY_UNITS[unit]


def check_value(name: str, value, memory_bytes: int | None) -> str:
    """The value as postgresql.conf takes it; a ValidationError keyed by `name` says what is wrong."""
    parameter = PARAMETERS.get(name)
    if parameter is None:
        raise ValidationError({name: f"{name} is not a parameter you can set; settable: {', '.join(PARAMETERS)}"})
    if parameter.kind == "bool":
        if isinstance(value, bool):
            return "on" if value else "off"
        raise ValidationError({name: f"{name} must be true or false"})
    if parameter.kind == "enum":
        if value in parameter.choices:
            return value
        raise ValidationError({name: f"{name} must be one of {', '.join(parameter.choices)}"})
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError({name: f"{name} must be a number or a string such as '64MB'"})
    if parameter.kind == "int":
        if isinstance(value, str) and not re.fullmatch(r"-?\d+", value.strip()):
            raise ValidationError({name: f"{name} must be a whole number"})
        number = int(value)
        if not parameter.low <= number <= parameter.high:
            raise ValidationError({name: f"{name} must be {parameter.low:g}-{parameter.high:g}, not {number}"})
        return str(number)
    match = _QUANTITY.fullmatch(str(value).strip())
    units = MEMORY_UNITS if parameter.kind == "memory" else TIME_UNITS_MS
    example = "64MB, 1GB" if parameter.kind == "memory" else "30s, 500ms, 5min"
    if match is None or (match.group(2) and match.group(2) not in units):
        raise ValidationError(
            {name: f"{name}: {value!r} is not a {parameter.kind} such as {example} (units: {', '.join(units)})"}
        )
    number, unit = int(match.group(1)), match.group(2)
    if number == -1 and parameter.unlimited:
        return "-1"
    if parameter.kind == "memory":
        amount = number * (MEMORY_UNITS[unit] if unit else _unit_bytes(parameter.unit))
        shown = _size
    else:
        amount = number * (TIME_UNITS_MS[unit] if unit else TIME_UNITS_MS[parameter.unit])
        shown = _duration
    if not parameter.low <= amount <= parameter.high:
        raise ValidationError({name: f"{name} must be {shown(parameter.low)}-{shown(parameter.high)}, not {value}"})
    if parameter.kind == "memory" and memory_bytes and amount > memory_bytes * parameter.of_memory:
        share = "the host's memory" if parameter.of_memory == 1 else f"{parameter.of_memory:.0%} of the host's memory"
        raise ValidationError(
            {name: f"{name} = {value} is more than {share} ({_size(int(memory_bytes * parameter.of_memory))})"}
        )
    return f"{number}{unit}" if unit else str(number)


def _duration(ms: float) -> str:
    for unit in ("d", "h", "min", "s"):
        if ms >= TIME_UNITS_MS[unit] and ms % TIME_UNITS_MS[unit] == 0:
            return f"{int(ms // TIME_UNITS_MS[unit])}{unit}"
    return f"{ms:g}ms"


def check_config(config: dict, memory_bytes: int | None) -> dict[str, str]:
    """Every parameter of `config` as postgresql.conf takes it; one ValidationError naming each bad value."""
    errors, checked = {}, {}
    for name, value in config.items():
        try:
            checked[name] = check_value(name, value, memory_bytes)
        except ValidationError as error:
            errors.update(error.message_dict)
    if errors:
        raise ValidationError(errors)
    return checked
