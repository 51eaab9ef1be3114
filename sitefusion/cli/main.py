"""The ``sitefusion`` command line: thin commands over the library.

Each command validates its arguments, calls one library function, prints a short summary and, on
failure, exits non-zero with a one-line reason. Heavy modules (torch, MONAI) are imported inside
the commands (marked ``# lazy: keeps --help fast``) so that ``sitefusion --help`` is instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer
import yaml
from rich.console import Console

from sitefusion.cli.dicomweb import (
    CredentialsOpt,
    DicomwebOpt,
    QidoOpt,
    StoreOpt,
    StudyOpt,
    score_from_dicomweb,
)
from sitefusion.cli.listen import listen_cmd
from sitefusion.cli.options import ExplainOpt, ScoreSiteOpt, SrPatientOpt
from sitefusion.cli.publish import card_cmd, export_cmd
from sitefusion.config import Config, config_to_dict, federated_config, load_config
from sitefusion.errors import SiteFusionError

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Multi-site medical imaging: per-site MONAI experts, site normalization, attention fusion.",
    pretty_exceptions_enable=False,
)
console = Console(stderr=False)
err_console = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="YAML config file (see configs/).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value, e.g. --set data.root=/data (repeatable)."),
]


def _fail(err: BaseException) -> NoReturn:
    err_console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=1)


def _load(config: Path, overrides: list[str] | None) -> Config:
    return load_config(config, overrides or [])


@app.command("config")
def config_cmd(config: ConfigArg, set_: SetOpt = None) -> None:
    """Validate a config and print it fully resolved (defaults filled in)."""
    try:
        cfg = _load(config, set_)
    except (SiteFusionError, OSError) as err:  # OSError: a disk that fills up, say
        _fail(err)
    console.print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), highlight=False)


@app.command("prepare")
def prepare_cmd(
    config: ConfigArg,
    out: Annotated[Path, typer.Option("--out", help="Run directory to create or resume.")],
    set_: SetOpt = None,
) -> None:
    """Prepare a run: read the manifest, split by group, fit one normalizer per site."""
    from sitefusion.reporting import print_preparation  # lazy: keeps --help fast
    from sitefusion.workflows import prepare_normalized  # lazy: keeps --help fast

    try:
        cfg = _load(config, set_)
        data, bank = prepare_normalized(cfg, out, console)
    except (SiteFusionError, OSError) as err:  # OSError: a disk that fills up, say
        _fail(err)
    print_preparation(console, data, bank)


@app.command("train")
def train_cmd(
    config: ConfigArg,
    out: Annotated[Path, typer.Option("--out", help="Run directory to create or resume.")],
    set_: SetOpt = None,
) -> None:
    """Train the whole chain: normalizers, every site's expert, pooled baseline, features, fusion."""
    from sitefusion.reporting import print_site_table  # lazy: keeps --help fast
    from sitefusion.workflows import quick_site_table, train_run  # lazy: keeps --help fast

    try:
        cfg = _load(config, set_)
        result = train_run(cfg, out, console=console)
        table = quick_site_table(out)
    except (SiteFusionError, OSError) as err:  # OSError: a disk that fills up, say
        _fail(err)
    print_site_table(console, table, "internal test split: balanced accuracy per site")
    timings = ", ".join(f"{k} {v:.0f}s" for k, v in result["timings"].items())
    console.print(f"run {result['run_id']} in {out}" + (f" ({timings})" if timings else ""))


@app.command("train-expert")
def train_expert_cmd(
    config: ConfigArg,
    site: Annotated[str, typer.Option("--site", help="The site whose expert to train.")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create or resume.")],
    set_: SetOpt = None,
) -> None:
    """Train one site's expert only (run it where that site's data lives)."""
    from sitefusion.workflows import train_run  # lazy: keeps --help fast

    try:
        cfg = _load(config, set_)
        result = train_run(cfg, out, console=console, sites=[site])
    except (SiteFusionError, OSError) as err:  # OSError: a disk that fills up, say
        _fail(err)
    took = result["timings"].get(f"expert:{site}")
    state = f"trained in {took:.0f} s" if took is not None else "already trained"
    console.print(f"expert {site}: {state}; weights in {out / 'experts' / (site + '.safetensors')}")


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    out: Annotated[Path, typer.Option("--out", help="Report directory.")],
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="Evaluate on this CSV instead of the run's test split."),
    ] = None,
    image_root: Annotated[
        Path | None,
        typer.Option("--image-root", help="Root for the manifest's relative image paths."),
    ] = None,
    loso: Annotated[bool, typer.Option("--loso", help="Also run leave-one-site-out.")] = False,
    allow_outside_root: Annotated[
        bool,
        typer.Option(
            "--allow-outside-root",
            help="Accept manifest image paths outside --image-root (absolute, '..').",
        ),
    ] = False,
    bootstrap: Annotated[
        int | None,
        typer.Option("--bootstrap", help="Bootstrap resamples (default: the run's config)."),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            "--split",
            help="Without --manifest: the internal split, 'test' or 'val' (to choose a design "
            "without looking at the test split).",
        ),
    ] = "test",
) -> None:
    """Evaluate every method of a run per site, with bootstrap CIs, and write the report."""
    from sitefusion.reporting import render_markdown_table  # lazy: keeps --help fast
    from sitefusion.workflows import evaluate_run  # lazy: keeps --help fast

    if image_root is not None and manifest is None:
        _fail(ValueError("--image-root needs --manifest"))
    if manifest is not None and split != "test":
        _fail(ValueError("--split chooses an internal split; it cannot be used with --manifest"))
    try:
        metrics = evaluate_run(
            run_dir,
            out,
            manifest=manifest,
            image_root=image_root,
            loso=loso,
            n_boot=bootstrap,
            allow_outside_root=allow_outside_root,
            split=split,
            console=console,
        )
    except (SiteFusionError, OSError) as err:  # OSError: a disk that fills up, say
        _fail(err)
    # soft_wrap: a table row stays one line in logs and narrow terminals
    console.print(render_markdown_table(metrics), highlight=False, soft_wrap=True)
    console.print(f"report: {out / 'report.html'}  metrics: {out / 'metrics.json'}")


@app.command("score")
def score_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    out: Annotated[
        Path, typer.Option("--out", help="Output folder; rerun the same command to resume.")
    ],
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Image files and folders (walked recursively): DICOM, NIfTI, PNG/JPEG."
        ),
    ] = None,
    site: ScoreSiteOpt = None,
    explain: ExplainOpt = False,
    convert_colour: Annotated[
        bool,
        typer.Option("--convert-colour", help="Convert grey <-> RGB to the run's channel count."),
    ] = False,
    sr_patient: SrPatientOpt = "source",
    readers: Annotated[
        int,
        typer.Option(
            "--readers",
            min=1,
            help="Reader processes, at most (threads where the platform cannot fork). Each "
            "holds one image being read, so this also bounds memory; with the networks on a "
            "GPU, more readers keep it fed.",
        ),
    ] = 2,
    dicomweb: DicomwebOpt = None,
    study: StudyOpt = None,
    qido: QidoOpt = None,
    store_results: StoreOpt = False,
    credentials: CredentialsOpt = None,
) -> None:
    """Score images with a trained run: scores.csv / scores.jsonl, DICOM SR, explanations."""
    from sitefusion.scoring import score_inputs  # lazy: keeps --help fast

    options = {
        "site": site,
        "explain": explain,
        "convert_colour": convert_colour,
        "console": err_console,
        "sr_patient": _sr_patient(sr_patient),
        "workers": readers,
    }
    try:
        if dicomweb is not None:
            if inputs:
                raise SiteFusionError("give input files or --dicomweb, not both")
            web = score_from_dicomweb(
                run_dir, dicomweb, out, study, qido, store_results, credentials, options
            )
            summary = web.scoring
        elif not inputs:
            raise SiteFusionError("no inputs: name files or folders, or use --dicomweb URL")
        else:
            if study or qido or store_results or credentials:
                raise SiteFusionError(
                    "--study, --qido, --store-results and --credentials need --dicomweb"
                )
            summary = score_inputs(run_dir, inputs, out, **options)  # type: ignore[arg-type]
    except (SiteFusionError, OSError) as err:  # OSError: a disk that fills up, say
        _fail(err)
    if dicomweb is not None:
        console.print(
            f"{len(web.studies)} studies: {web.retrieved} instances retrieved now, "
            f"{web.reused} already here, {web.not_images} non-image objects left out; "
            f"{web.stored} SR stored back",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"{summary.items} items: {summary.ok} ok, {summary.errors} errors "
        f"({summary.scored} scored now, {summary.skipped} already done; "
        f"{summary.items_per_second:.1f} items/s); {summary.sr_written} DICOM SR; "
        f"scores in {summary.csv_path}",
        highlight=False,
        soft_wrap=True,
    )
    for reason in summary.sr_errors:
        err_console.print(f"[yellow]warning:[/] {reason}", highlight=False, soft_wrap=True)
    if summary.items == 0:
        _fail(ValueError("no input files found"))
    if summary.ok == 0:
        _fail(
            ValueError(f"none of the {summary.items} inputs could be scored; see the error column")
        )


@app.command("site")
def site_cmd(
    superlink: Annotated[str, typer.Option("--superlink", help="The SuperLink's HOST:PORT.")],
    site: Annotated[str, typer.Option("--site", help="This site's name (as in the manifest).")],
    manifest: Annotated[Path, typer.Option("--manifest", help="This site's manifest (CSV).")],
    workdir: Annotated[Path, typer.Option("--workdir", help="Where this site keeps its runs.")],
    root: Annotated[
        Path | None, typer.Option("--root", help="Image root (default: the manifest's folder).")
    ] = None,
    port: Annotated[
        int, typer.Option("--port", help="Local port of the site's ClientApp API.")
    ] = 9094,
    root_certificates: Annotated[
        Path | None,
        typer.Option("--root-certificates", help="CA certificate of the SuperLink (TLS)."),
    ] = None,
    group_key: Annotated[
        Path | None,
        typer.Option(
            "--group-key",
            help="The consortium's secret group key file (the same at every site): patients "
            "or lesions held by two sites then get one split everywhere.",
        ),
    ] = None,
    connect_timeout: Annotated[
        float,
        typer.Option(
            "--connect-timeout",
            help="Seconds to wait for the SuperLink to answer before giving up.",
            min=0.0,
        ),
    ] = 60.0,
) -> None:
    """Start this site's Flower SuperNode: it trains and evaluates on this site's data only.

    Without --root-certificates the connection is plain text, which is only allowed to a
    SuperLink on a loopback address. Without --group-key, a patient or lesion held by two sites
    is split at each independently. Stopping this command (Ctrl-C, SIGTERM) stops every process
    it started.
    """
    from sitefusion.atomic import ensure_writable_folder  # lazy: keeps --help fast
    from sitefusion.federated import SiteSetup  # lazy: keeps --help fast
    from sitefusion.federated.deploy import (  # lazy: keeps --help fast
        TlsFiles,
        flower_env,
        supernode_command,
    )
    from sitefusion.federated.site_process import run_site  # lazy: keeps --help fast

    try:
        setup = SiteSetup.from_node_config(
            {
                "site": site,
                "manifest": str(manifest),
                "workdir": str(workdir),
                "root": str(root or ""),
                "group_key": str(group_key or ""),
            }
        )
        tls = TlsFiles(root_certificates) if root_certificates is not None else None
        command = supernode_command(superlink, setup, port=port, tls=tls)
        ensure_writable_folder(setup.workdir, "site work folder (--workdir)")
        env = flower_env(setup.workdir / "flwr_home")
        console.print(
            f"site {setup.site}: waiting up to {connect_timeout:g} s for the SuperLink at "
            f"{superlink}"
        )
        code = run_site(
            command,
            env,
            superlink=superlink,
            connect_timeout=connect_timeout,
            say=lambda line: console.print(line, highlight=False),
        )
    except (SiteFusionError, OSError) as err:
        _fail(err)
    sys.exit(code)


@app.command("federate")
def federate_cmd(
    config: ConfigArg,
    out: Annotated[Path, typer.Option("--out", help="Run directory to create or resume.")],
    superlink: Annotated[
        str | None,
        typer.Option("--superlink", help="A running SuperLink's HOST:PORT (default: start one)."),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Port of a SuperLink started here.")] = 9092,
    ca: Annotated[Path | None, typer.Option("--ca", help="CA certificate (TLS).")] = None,
    cert: Annotated[Path | None, typer.Option("--cert", help="SuperLink certificate.")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="SuperLink private key.")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds for the whole run.")] = 86400,
    set_: SetOpt = None,
) -> None:
    """Run the federation: experts, fusion head and FedAvg trained at the sites, evaluated there.

    Starts a SuperLink on this machine (or uses --superlink), runs sitefusion's Flower app and
    writes the run directory and its report. Sites join with `sitefusion site`. A rerun with the
    same --out resumes.
    """
    import json  # lazy: keeps --help fast

    from sitefusion.federated.deploy import (  # lazy: keeps --help fast
        TlsFiles,
        app_folder,
        flower_env,
        run_app,
        start_process,
        superlink_command,
        write_connection,
    )
    from sitefusion.federated.site_process import check_reachable  # lazy: keeps --help fast
    from sitefusion.reporting import render_markdown_table  # lazy: keeps --help fast

    link = None
    try:
        cfg = _load(config, set_)
        federated_config(cfg)  # refuse what a federation cannot do before starting anything
        tls = TlsFiles(ca, cert, key) if ca is not None else None
        out = out.resolve()
        work = out / "federation"
        work.mkdir(parents=True, exist_ok=True)
        request = work / "request.yaml"
        request.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), encoding="utf-8")
        env = flower_env(work / "flwr_home")
        address = superlink or f"127.0.0.1:{port}"
        if superlink is None:
            host = "127.0.0.1" if tls is None else "0.0.0.0"
            link = start_process(
                "SuperLink",
                superlink_command(port, host=host, tls=tls),
                port,
                work / "superlink.log",
                env,
            )
            console.print(
                f"started SuperLink (pid {link.popen.pid}) on {host}:{port}; sites join with:"
            )
            console.print(
                f"  sitefusion site --superlink {address} --site NAME --manifest CSV --workdir DIR"
            )
        write_connection(work / "flwr_home", "sitefusion", address, tls)
        outcome = run_app(
            app_folder(work / "app"),
            "sitefusion",
            config=request,
            out=out,
            env=env,
            timeout=timeout,
            on_line=lambda line: console.print(line, highlight=False, markup=False),
        )
        if outcome.run_id is None:
            check_reachable(address, 0)  # names the address if nothing answers there
            raise SiteFusionError(
                f"the SuperLink at {address} started no run (see Flower's message above); "
                f"rerun the same command to resume from {out}"
            )
        if outcome.status != "finished:completed":
            raise SiteFusionError(
                f"federated run {outcome.run_id} ended with status {outcome.status}; rerun the "
                f"same command to resume from {out}"
            )
        metrics = json.loads((out / "report" / "metrics.json").read_text(encoding="utf-8"))
    except (SiteFusionError, OSError) as err:
        _fail(err)
    finally:
        if link is not None:
            link.stop()
    console.print(render_markdown_table(metrics), highlight=False, soft_wrap=True)
    console.print(f"federated run in {out}; report {out / 'report' / 'report.html'}")


app.command("card")(card_cmd)
app.command("export")(export_cmd)


def _sr_patient(value: str) -> Literal["source", "blank"]:
    if value == "source":
        return "source"
    if value == "blank":
        return "blank"
    _fail(ValueError(f"--sr-patient is {value!r}; valid choices: source, blank"))


app.command("listen")(listen_cmd)


def main() -> None:
    """Entry point of the ``sitefusion`` script."""
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted; rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
