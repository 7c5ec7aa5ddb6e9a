"""cryopick dashboard: follow self-training campaigns in the browser, from their MLflow store.

Start it with ``streamlit run dashboard/app.py -- --tracking-uri URI`` or ``cryopick dashboard``.
URI may also be a campaign directory or an ``mlflow.db`` path; without one the page opens
``$CRYOPICK_TRACKING_URI``, then ``$MLFLOW_TRACKING_URI``, then the newest
``./campaigns/*/mlflow.db``, then ``sqlite:///./mlflow.db`` (see ``data.default_tracking_uri``);
the sidebar field changes it. This file only lays out: tables come from
``cryopick.dashboard.data`` and figures from ``cryopick.dashboard.figures``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from cryopick.dashboard import data, figures, labeling
from cryopick.errors import CryopickError
from cryopick.io.coords import Box

TABLE_FORMATS = {  # per-round table: column -> (label, printf format)
    "precision": ("precision", "%.3f"), "recall": ("recall", "%.3f"), "f1": ("F1", "%.3f"),
    "average_precision": ("AP", "%.3f"), "threshold": ("threshold", "%.3f"), "min_distance": ("min dist", "%.1f"),
    "n_picks": ("picks", "%d"), "train_loss": ("train loss", "%.4f"), "val_f1": ("val F1", "%.3f"),
    "time_total_s": ("time (s)", "%.1f"),
}


def notice(err: data.DashboardError) -> None:
    """Show a typed dashboard state as an error, warning or info box."""
    getattr(st, err.level)(str(err))


def guarded(title: str, render: Callable[..., None], *args: Any) -> None:
    """Run one section; a failure becomes a message in that section, never a traceback."""
    try:
        render(*args)
    except data.DashboardError as err:
        notice(err)
    except Exception as exc:  # noqa: BLE001 - the page must stay up whatever one section hits
        st.error(f"{title}: could not be drawn ({type(exc).__name__}: {exc})")


def sidebar() -> tuple[str, float | None]:
    """Store and refresh controls; returns the typed tracking URI and the refresh interval."""
    with st.sidebar:
        st.title("cryopick")
        default = data.default_tracking_uri(sys.argv[1:], os.environ, Path.cwd())
        uri = st.text_input("MLflow tracking URI", value=default, key="tracking_uri",
                            help="A URI, an mlflow.db file or a campaign directory")
        auto = st.toggle("Refresh while campaigns run", value=True, key="auto_refresh")
        every = st.slider("every (s)", 2, 120, 10, key="refresh_s", disabled=not auto)
    return uri, float(every) if auto else None


def campaign_header(camp: data.Campaign, rounds: pd.DataFrame) -> None:
    """Campaign name, status and the headline numbers."""
    done = data.completed(rounds)
    st.header(f"Campaign {camp.name}")
    cols = st.columns(4)
    cols[0].metric("Rounds completed", len(done))
    cols[1].metric("Status", camp.status)
    if len(done):
        best = done.loc[done["f1"].idxmax()]
        cols[2].metric("Latest F1", f"{done['f1'].iloc[-1]:.3f}")
        cols[3].metric("Best F1", f"{best['f1']:.3f}", help=f"round {int(best['round'])}")
        st.caption("F1 per round: " + " → ".join(f"{v:.3f}" for v in done["f1"]))
    if camp.campaign_dir is not None:
        st.caption(f"Campaign directory: `{camp.campaign_dir}`")


def rounds_section(rounds: pd.DataFrame) -> None:
    """Precision/recall/F1 per round: the line chart and the table."""
    st.altair_chart(figures.metrics_chart(data.metrics_long(rounds)), width="stretch")
    cols = ["round", "run_status", *[c for c in TABLE_FORMATS if rounds[c].notna().any()]]
    config = {c: st.column_config.NumberColumn(label, format=fmt) for c, (label, fmt) in TABLE_FORMATS.items()}
    config["run_status"] = st.column_config.TextColumn("status")
    st.dataframe(rounds[cols], hide_index=True, column_config=config, key="rounds_table")
    pending = rounds[rounds["f1"].isna()]
    if len(pending):
        st.info("No metrics yet for round(s) " + ", ".join(str(r) for r in pending["round"]) + " (still running?)")


def pr_section(uri: str, rounds: pd.DataFrame, camp: data.Campaign) -> None:
    st.altair_chart(figures.pr_chart(data.pr_curves(uri, rounds, camp.campaign_dir)), width="stretch")


def tune_section(uri: str, rounds: pd.DataFrame, camp: data.Campaign) -> None:
    trials = data.tune_trials(uri, rounds, camp.campaign_dir)
    st.altair_chart(figures.tune_chart(trials), width="stretch")
    st.caption(f"{len(trials)} trials over {trials['round'].nunique()} round(s)")


def suggestions_section(uri: str, rounds: pd.DataFrame, camp: data.Campaign) -> None:
    """What to label next: the latest round's ranked regions and micrographs."""
    sug = data.suggestions(uri, rounds, camp.campaign_dir)
    st.dataframe(sug.drop(columns=["round"]), hide_index=True, column_config={
        k: st.column_config.NumberColumn(k, format="%.3f") for k in ("score", "uncertainty", "entropy", "disagreement")})
    where = camp.campaign_dir or "CAMPAIGN"
    st.caption(f"Round {int(sug['round'].iloc[0])}: regions (x0,y0,x1,y1 in micrograph pixels) where the model is least sure: "
               "picks near its threshold, high entropy, disagreement between the flipped and turned views. "
               f"Other strategies or whole micrographs: `cryopick suggest --campaign {where} --strategy random --whole`.")


@st.cache_data(show_spinner="Picking with the latest round's model ...", max_entries=16)
def model_picks(model_dir: str, micrograph: str, stamp: float) -> tuple[list[list[float]], float]:
    """The round's picks on a micrograph (original px) and the particle diameter (``stamp``: the model's mtime)."""
    from cryopick.config import PickConfig
    from cryopick.inference.picker import load_picker, pick_micrograph
    from cryopick.io.micrograph import read_micrograph

    model, meta = load_picker(Path(model_dir), "cpu")
    picked = pick_micrograph(model, meta, read_micrograph(Path(micrograph)), PickConfig())
    return picked.xy.tolist(), float(meta.diameter)


@st.cache_data(max_entries=16)
def micrograph_view(micrograph: str, box: Box | None) -> labeling.View:
    from cryopick.io.micrograph import read_micrograph

    return labeling.make_view(read_micrograph(Path(micrograph)).data, box)


def labeling_section(camp: data.Campaign) -> None:
    """Label a suggested region (or any unlabeled micrograph): click a pick to remove it, empty space to add one, save."""
    import numpy as np
    from streamlit_image_coordinates import streamlit_image_coordinates

    from cryopick.selftrain.state import CampaignState, round_dir

    if camp.campaign_dir is None or not (camp.campaign_dir / "campaign.json").is_file():
        raise data.MissingArtifact("labeling needs the campaign directory on this machine")
    campaign = camp.campaign_dir
    if st.session_state.get("label_saved"):
        st.success(st.session_state["label_saved"])
    waiting = labeling.waiting_labels(campaign)
    if waiting:
        st.info(f"{len(waiting)} micrograph(s) labeled here and waiting for the next round ({', '.join(waiting[:5])}"
                f"{' ...' if len(waiting) > 5 else ''}). Train it with:")
        st.code(labeling.next_round_command(campaign), language="bash")
    todo = labeling.targets(campaign)
    if not todo:
        st.info("Every micrograph of this campaign is labeled.")
        return
    target = st.selectbox("Label", todo, format_func=lambda t: t.title, key="label_target") or todo[0]
    state = CampaignState.load(campaign)
    rdir = round_dir(campaign, state.completed_rounds[-1])
    xy, diameter = model_picks(str(rdir), str(target.micrograph), (rdir / "model.pt").stat().st_mtime)
    key = f"label_picks::{target.title}"
    start = labeling.inside(np.asarray(xy), target.box)
    if key not in st.session_state:  # start from the model's picks: the user corrects its errors
        st.session_state[key] = start
    view = micrograph_view(str(target.micrograph), target.box)
    click = streamlit_image_coordinates(labeling.draw(view, st.session_state[key], diameter / 2), key=f"label_click::{target.title}",
                                        width=int(view.image.shape[1]), cursor="crosshair")
    seen = f"label_seen::{target.title}"
    if click and click.get("unix_time") != st.session_state.get(seen):  # each click once, whatever reruns follow
        st.session_state[seen] = click.get("unix_time")
        shrink = view.image.shape[1] / max(1, int(click.get("width") or view.image.shape[1]))  # the browser may show it narrower
        at = view.to_original(click["x"] * shrink, click["y"] * shrink)
        st.session_state[key] = labeling.toggle(st.session_state[key], at, diameter / 2)
        st.rerun(scope="fragment")
    picks = st.session_state[key]
    st.caption(f"{len(picks)} picks ({len(start)} from round {state.completed_rounds[-1]}'s model); "
               f"shown at {view.zoom:g} micrograph px per screen px. Click a pick to remove it, empty space to add one.")
    replace = st.checkbox("Replace labels saved earlier for this micrograph", key="label_replace")
    if st.button("Save labels", key="label_save", type="primary"):
        try:
            label = labeling.save(campaign, target, picks, replace=replace)
        except CryopickError as err:
            st.error(str(err))
        else:
            st.session_state["label_saved"] = f"Saved {label.n_picks} picks to {label.path}"
            st.rerun(scope="fragment")


def coverage_section(rounds: pd.DataFrame) -> None:
    cov = data.coverage_table(rounds)
    st.altair_chart(figures.coverage_chart(cov), width="stretch")
    st.dataframe(cov.pivot(index="round", columns="label", values="share"), column_config={
        k: st.column_config.NumberColumn(k, format="percent") for k in figures.COVERAGE_COLORS})


def timing_section(rounds: pd.DataFrame) -> None:
    tim = data.timings_table(rounds)
    st.altair_chart(figures.timing_chart(tim), width="stretch")
    st.caption(f"Total {tim['seconds'].sum():.0f} s over {tim['round'].nunique()} round(s)")


def viewer_section(uri: str, rounds: pd.DataFrame, camp: data.Campaign) -> None:
    """Micrograph viewer: pick a round and a micrograph; heatmap, picks and true picks overlaid."""
    done = data.completed(rounds)
    if done.empty:
        raise data.MissingArtifact("no completed round to show yet")
    c1, c2, c3 = st.columns([1, 2, 2])
    rnd = c1.selectbox("Round", list(done["round"]), index=len(done) - 1, key="viewer_round")
    row = done[done["round"] == rnd].iloc[0].to_dict()
    stems = data.preview_stems(uri, row, camp.campaign_dir)
    if not stems:
        raise data.MissingArtifact(f"round {rnd}: no micrograph previews logged")
    stem = c2.selectbox("Micrograph", stems, key="viewer_stem") or stems[0]
    preview = data.load_preview(uri, row, stem, camp.campaign_dir)
    top = float(max(1.0, preview.picks_score.max(initial=0.0)))
    thr = row.get("threshold")
    default = float(thr) if thr is not None and pd.notna(thr) and thr <= top else 0.0
    min_score = c3.slider("Minimum pick score", 0.0, top, default, key=f"viewer_min_{rnd}")
    heat = st.checkbox("Show heatmap", value=True, key="viewer_heat")
    shown = int((preview.picks_score >= min_score).sum())
    fig = figures.micrograph_figure(preview, min_score, heat, f"{stem}, round {rnd}")
    st.pyplot(fig, width="content")
    st.caption(f"{shown} of {len(preview.picks_xy)} picks at score ≥ {min_score:.2f}; "
               f"{len(preview.truth_xy)} true picks" + ("" if len(preview.truth_xy) else " (none for this micrograph)"))


def body(uri: str) -> None:
    """Everything that follows the store: reruns on its own timer while campaigns run."""
    guarded("Dashboard", campaign_page, uri)


def campaign_page(uri: str) -> None:
    """Campaign list, the chosen campaign's headline, per-round chart and table, detail tabs."""
    try:
        uri = data.resolve_tracking_uri(uri)
        campaigns = data.list_campaigns(uri)
    except data.DashboardError as err:
        notice(err)
        return
    st.caption(f"Store `{uri}`, updated {time.strftime('%H:%M:%S')}")
    with st.expander(f"Campaigns in this store ({len(campaigns)})", expanded=len(campaigns) > 1):
        st.dataframe(campaigns.drop(columns=["run_id"]), hide_index=True, column_config={
            "best_f1": st.column_config.NumberColumn("best F1", format="%.3f")})
    names = dict(zip(campaigns["run_id"], campaigns["campaign"] + " (" + campaigns["status"] + ")", strict=True))
    run_id = st.selectbox("Campaign", list(names), format_func=names.__getitem__, key="campaign")
    try:
        camp = data.get_campaign(uri, run_id)
        rounds = data.rounds_table(uri, run_id)
    except data.DashboardError as err:
        st.header(f"Campaign {names[run_id]}")
        notice(err)
        return
    campaign_header(camp, rounds)
    guarded("Metrics per round", rounds_section, rounds)
    tabs = st.tabs(["PR curves", "Tune search", "Pseudo-labels", "Micrographs", "Timing", "Label next", "Label"])
    with tabs[0]:
        guarded("PR curves", pr_section, uri, rounds, camp)
    with tabs[1]:
        guarded("Tune search", tune_section, uri, rounds, camp)
    with tabs[2]:
        guarded("Pseudo-label coverage", coverage_section, rounds)
    with tabs[3]:
        guarded("Micrograph viewer", viewer_section, uri, rounds, camp)
    with tabs[4]:
        guarded("Timing", timing_section, rounds)
    with tabs[5]:
        guarded("Labeling suggestions", suggestions_section, uri, rounds, camp)
    with tabs[6]:
        guarded("Labeling", labeling_section, camp)


def main() -> None:
    """Lay out the page; the fragment timer re-reads the store every few seconds when enabled."""
    st.set_page_config(page_title="cryopick campaigns", layout="wide")
    uri, every = sidebar()
    st.fragment(run_every=every)(body)(uri)


if __name__ == "__main__":  # streamlit run (and AppTest) execute the file as __main__
    main()
