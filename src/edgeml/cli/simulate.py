"""``edgeml simulate``: generate realistic data for trials, demos and tests."""

from __future__ import annotations

import io
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from edgeml.cli._context import CliState, err_console
from edgeml.errors import UserError


class FileFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


app = typer.Typer(
    help="Generate realistic data: machine sensor telemetry with faults and drift.", no_args_is_help=True
)


@app.command()
def sensors(
    ctx: typer.Context,
    machines: Annotated[int, typer.Option(min=1, help="Number of machines (pumps).")] = 4,
    readings: Annotated[int, typer.Option(min=1, help="Readings per machine.")] = 2000,
    interval: Annotated[float, typer.Option(min=0.001, help="Seconds between readings.")] = 10.0,
    fault_rate: Annotated[
        float, typer.Option(min=0, max=0.999, help="Chance per reading that a fault episode starts.")
    ] = 0.002,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 0,
    drift: Annotated[
        list[str] | None,
        typer.Option(
            help="Drift to inject, repeatable: SENSOR:KIND:AMOUNT[:START[:MACHINE,...]] "
            "with KIND offset|scale|noise|stuck and START a fraction of the run, e.g. "
            "temperature:offset:8:0.5:pump-001."
        ),
    ] = None,
    fmt: Annotated[FileFormat, typer.Option("--format", help="Output format.")] = FileFormat.csv,
    out: Annotated[
        Path | None,
        typer.Option(help="Write to this local file ('-' for stdout).", dir_okay=False, allow_dash=True),
    ] = None,
    store_key: Annotated[
        str | None, typer.Option(help="Write to this key of the object store instead.")
    ] = None,
    mqtt: Annotated[
        str | None,
        typer.Option(help="Publish each reading to this broker instead (mqtt://host:1883), as JSON."),
    ] = None,
    topic: Annotated[str, typer.Option(help="MQTT topic; {field} takes the reading's field.")] = (
        "plant/{machine_id}/telemetry"
    ),
    qos: Annotated[int, typer.Option(min=0, max=2, help="MQTT QoS of the published messages.")] = 1,
    rate: Annotated[
        float, typer.Option(min=0, help="Messages per second to MQTT; 0 for as fast as possible.")
    ] = 0.0,
) -> None:
    """Simulate pump telemetry (temperature, vibration, pressure, rpm, power) with fault labels."""
    from edgeml.simulate.sensors import (
        SensorSimulation,
        parse_drift,
        simulate_sensors,
        write_csv,
        write_jsonl,
    )

    try:
        sim = SensorSimulation(
            machines=machines,
            readings=readings,
            interval_s=interval,
            fault_rate=fault_rate,
            seed=seed,
            drift=tuple(parse_drift(d) for d in drift or ()),
        )
        columns = simulate_sensors(sim)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    if sum(x is not None for x in (out, store_key, mqtt)) != 1:
        raise UserError("give exactly one of --out FILE, --store-key KEY or --mqtt URL")
    if mqtt is not None:
        from edgeml.simulate.publish import publish_records
        from edgeml.simulate.sensors import iter_records

        sent = publish_records(iter_records(columns), mqtt, topic=topic, qos=qos, rate=rate)
        err_console.print(f"published {sent:,} readings to {mqtt} ({topic})")
        return
    writer = write_csv if fmt is FileFormat.csv else write_jsonl
    buffer = io.StringIO()
    rows = writer(columns, buffer)
    data = buffer.getvalue().encode()
    if store_key is not None:
        from edgeml.store import store_from_settings

        state: CliState = ctx.obj
        store = store_from_settings(state.settings())
        store.put(
            store_key, data, content_type="text/csv" if fmt is FileFormat.csv else "application/x-ndjson"
        )
        err_console.print(f"wrote {rows:,} rows to {store.url}/{store_key}")
    elif str(out) == "-":
        typer.echo(data.decode(), nl=False)
    else:
        assert out is not None
        out.write_bytes(data)
        err_console.print(f"wrote {rows:,} rows to {out}")
