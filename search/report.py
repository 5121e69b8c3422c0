"""Evaluation -> a report folder: report.json, per_photo.csv and a self-contained index.html.

The HTML has no external assets: CSS inline, plots (matplotlib) and photo
thumbnails embedded as base64 data URIs, so the folder can be mailed or
opened offline. It states the verdict first, losses as plainly as gains.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import numpy as np

from .evaluate import MODES, Evaluation

THUMB_PX = 180
EXAMPLES = 6  # photos shown for "gained most" and "lost most"
REVIEW_THUMBS = 24
GALLERY_MAX = 60  # photos per part (queries, listings) in the before/after gallery, in input order
GALLERY_PX = 150
HEADLINE_METRICS = ("R@1", "R@5", "R@10", "P@1", "P@10", "mAP", "MRR")
_MODE_TEXT = {"raw": "raw", "clean": "cleaned", "fused": "fused (raw + cleaned)"}


def _mode_text(mode: str) -> str:
    base, _, view = mode.partition(":")
    return _MODE_TEXT[base] + (f" ({view} view)" if view else "")


class _VariantText(dict):
    def __missing__(self, variant: str) -> str:  # a variant with a view, e.g. clean:blur/clean:blur
        q, c = variant.split("/")
        return f"{_mode_text(q)} photos vs {_mode_text(c)} catalog"


VARIANT_TEXT = _VariantText(
    {f"{q}/{c}": f"{_MODE_TEXT[q]} photos vs {_MODE_TEXT[c]} catalog" for q in MODES for c in MODES})


def write_report(ev: Evaluation, out_dir: Path, title: str = "Does cleanup help visual search?") -> Path:
    """Write the three files into out_dir; returns the path of index.html."""
    from photos.io import write_text_atomic

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "report.json", json.dumps(ev.to_json(), indent=2, default=str))
    write_text_atomic(out_dir / "per_photo.csv", _csv(ev.photos))
    return write_text_atomic(out_dir / "index.html", render_html(ev, title))


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


# --------------------------------------------------------------------------- pieces


def _data_uri(png_or_jpeg: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(png_or_jpeg).decode('ascii')}"


def thumbnail(path: str | Path, px: int = THUMB_PX) -> str:
    """A JPEG data URI of the image at path (longest side px), or "" if unreadable."""
    from photos.io import load_image
    from search.embedders import to_rgb

    try:
        im = to_rgb(load_image(path))
    except (ValueError, OSError):
        return ""
    im.thumbnail((px, px))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=82)
    return _data_uri(buf.getvalue(), "image/jpeg")


def _figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return _data_uri(buf.getvalue(), "image/png")


def _new_axes(width: float, height: float):
    """A figure of its own (no pyplot: the host program's backend and figure list are left alone)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def recall_curve_plot(ev: Evaluation) -> str:
    fig, ax = _new_axes(6, 3.6)
    for v in ev.variants:
        ys = ev.curves[v]
        ax.plot(range(1, len(ys) + 1), ys, marker="." if len(ys) < 30 else None, label=VARIANT_TEXT[v])
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k (a correct item in the top k)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _figure_uri(fig)


def rank_changes(ev: Evaluation, variant: str) -> np.ndarray:
    """log2(baseline rank / variant rank) per photo: > 0 = the cleaned photo ranks the match higher."""
    big = ev.settings["ranking_depth"] + 1
    slug_b, slug_v = ev.baseline.replace("/", "_"), variant.replace("/", "_")
    r0 = np.array([p[f"rank_{slug_b}"] or big for p in ev.photos], float)
    r1 = np.array([p[f"rank_{slug_v}"] or big for p in ev.photos], float)
    return np.log2(r0 / r1)


def rank_change_plot(ev: Evaluation, variant: str) -> str:
    change = rank_changes(ev, variant)
    lim = max(1.0, float(np.ceil(np.abs(change).max())))
    bins = np.linspace(-lim, lim, int(4 * lim) + 2)
    fig, ax = _new_axes(6, 3.2)
    ax.hist(change[change < 0], bins=bins, color="#c0392b", label=f"worse ({int((change < 0).sum())})")
    ax.hist(change[change > 0], bins=bins, color="#27ae60", label=f"better ({int((change > 0).sum())})")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("log2(raw rank / cleaned rank) of the first correct item")
    ax.set_ylabel("photos")
    ax.set_title(f"{int((change == 0).sum())} photos unchanged (not shown)", fontsize=9)
    ax.legend(fontsize=8)
    return _figure_uri(fig)


# --------------------------------------------------------------------------- HTML

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1150px;
color:#222;padding:0 16px}h1{font-size:24px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd}
.verdict{padding:12px 16px;border-radius:6px;margin:10px 0;font-size:16px}
.gain{background:#e6f6ea;border-left:6px solid #27ae60}.loss{background:#fbe9e7;border-left:6px solid #c0392b}
.none{background:#f2f2f2;border-left:6px solid #888}
.question{font-size:17px;background:#f5f8fc;border-left:6px solid #2e6da4;padding:10px 14px}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:right;font-variant-numeric:tabular-nums}
th{background:#f7f7f7}td.l,th.l{text-align:left}.ci{color:#777;font-size:12px}
.pair{display:flex;gap:10px;align-items:flex-start;margin:10px 0;padding:8px;border:1px solid #eee}
.pair figure{margin:0;width:180px;text-align:center;font-size:12px}.pair img{max-width:180px;max-height:180px}
.pair .small{flex:1;min-width:0;overflow-wrap:anywhere}.ok{color:#1e8449;font-weight:600}.bad{color:#b03a2e;font-weight:600}.small{font-size:12px;color:#666}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;width:140px;font-size:11px}
.grid img{max-width:140px;max-height:140px}
.ba{display:flex;flex-wrap:wrap;gap:10px}.ba figure{margin:0;width:312px;border:1px solid #e4e4e4;padding:5px;
font-size:11px;color:#444}.ba .two{display:flex;gap:6px}.ba .two img{width:150px;height:150px;object-fit:contain;
background:#f3f3f3}.ba figcaption{margin-top:4px;overflow-wrap:anywhere}
"""

RENDER_CHECK = """<div id="render-check" hidden></div><script>
window.addEventListener('load',function(){var i=document.images,n=0;for(var j=0;j<i.length;j++)
{if(i[j].complete&&i[j].naturalWidth>0)n++;}var e=document.getElementById('render-check');
e.setAttribute('data-images',i.length);e.setAttribute('data-loaded',n);});</script>"""


def _e(x) -> str:
    return html.escape(str(x))


def _fmt_ci(m: dict, signed: bool = False) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return (f"{f.format(m['mean'])} <span class=ci>[{f.format(m['low'])}, {f.format(m['high'])}]</span>")


def ci_level(ev: Evaluation) -> str:
    """Confidence level of the evaluation's intervals as text ("95%"), from its EvalConfig."""
    return f"{100 * ev.settings['eval_config']['confidence']:g}%"


ANSWER = {"gain": "Yes: cleanup HELPED", "loss": "No: cleanup HURT",
          "no significant change": "Not measurably: no significant change"}


def question(ev: Evaluation) -> str:
    """The scenario's question in words ("" when the evaluation named no scenario)."""
    sc = ev.scenario
    return f"{sc['title']}: {sc['question']}" if sc else ""


def verdict_sentence(ev: Evaluation, variant: str) -> str:
    """The verdict of ``variant`` in words with its figures; the scenario's own variant opens with
    the scenario's question and answers it."""
    c = ev.comparisons[variant]
    base, new, d = ev.metrics[ev.baseline]["MRR"]["mean"], ev.metrics[variant]["MRR"]["mean"], c["diff"]["MRR"]
    r1b, r1v = ev.metrics[ev.baseline]["R@1"]["mean"], ev.metrics[variant]["R@1"]["mean"]
    what = {"gain": "Cleanup HELPED", "loss": "Cleanup HURT",
            "no significant change": "No significant change"}[c["verdict"]]
    if ev.scenario and variant == ev.headline:
        what = f"{question(ev)} {ANSWER[c['verdict']]}"
    return (f"{what} ({VARIANT_TEXT[variant]}, compared with {VARIANT_TEXT[ev.baseline]}): "
            f"MRR {base:.3f} -> {new:.3f} "
            f"(difference {d['mean']:+.3f}, {ci_level(ev)} CI [{d['low']:+.3f}, {d['high']:+.3f}], Wilcoxon p = "
            f"{c['wilcoxon_p_rr']:.3g}); R@1 {r1b:.3f} -> {r1v:.3f}. {c['improved']} photos ranked the "
            f"correct item higher, {c['worse']} lower, {c['same']} unchanged (of {c['n']}).")


def _metrics_table(ev: Evaluation) -> str:
    names = [m for m in HEADLINE_METRICS if m in ev.metrics[ev.baseline]]
    head = "".join(f"<th>{_e(VARIANT_TEXT[v])}</th>" for v in ev.variants)
    head += "".join(f"<th>{_e(v)} minus raw/raw</th>" for v in ev.variants if v != ev.baseline)
    rows = []
    for m in names:
        cells = "".join(f"<td>{_fmt_ci(ev.metrics[v][m])}</td>" for v in ev.variants)
        cells += "".join(f"<td>{_fmt_ci(ev.comparisons[v]['diff'][m], True)}</td>"
                         for v in ev.variants if v != ev.baseline)
        rows.append(f"<tr><th class=l>{m}</th>{cells}</tr>")
    return f"<table><tr><th class=l>metric</th>{head}</tr>{''.join(rows)}</table>"


def _class_table(ev: Evaluation) -> str:
    cols = [m for m in ("P@1", "P@10", "mAP", "MRR") if m in ev.metrics[ev.baseline]]
    head = "".join(f"<th>{m} {_e(v)}</th>" for m in cols for v in ev.variants)
    rows = []
    for lab, base in ev.by_class[ev.baseline].items():
        cells = "".join(f"<td>{ev.by_class[v][lab][m]:.3f}</td>" for m in cols for v in ev.variants)
        rows.append(f"<tr><td class=l>{_e(lab)}</td><td>{base['n']}</td>{cells}</tr>")
    return f"<table><tr><th class=l>class</th><th>n</th>{head}</tr>{''.join(rows)}</table>"


def _fig(uri: str, caption: str) -> str:
    img = f"<img src='{uri}' alt=''>" if uri else "<div class=small>(unreadable)</div>"
    return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"


def _examples(ev: Evaluation, variant: str, gained: bool) -> str:
    change = rank_changes(ev, variant)
    order = np.argsort(-change if gained else change, kind="stable")
    picked = [i for i in order[:EXAMPLES] if (change[i] > 0 if gained else change[i] < 0)]
    if not picked:
        return "<p>None.</p>"
    q_side, cat_side = variant.split("/")
    slug_b, slug_v = ev.baseline.replace("/", "_"), variant.replace("/", "_")
    blocks = []
    for i in picked:
        p = ev.photos[i]

        def match(slug: str, side: str) -> str:
            item = ev.catalog[p[f"top1_{slug}"]]
            path = item["cleaned_path"] if side.split(":")[0] != "raw" and item["cleaned_path"] else item["path"]
            ok = item["label"] == p["label"]
            mark = "<span class=ok>correct</span>" if ok else "<span class=bad>wrong</span>"
            return _fig(thumbnail(path), f"top match ({slug.replace('_', '/')}): {_e(item['label'])} {mark}")

        rank = lambda s: p[f"rank_{s}"] or f">{ev.settings['ranking_depth']}"  # noqa: E731
        blocks.append(
            "<div class=pair>"
            + _fig(thumbnail(p["path"]), f"raw photo, label {_e(p['label'])}<br>rank {rank(slug_b)}")
            + (_fig(thumbnail(p["cleaned_path"]) if p["cleaned_path"] else "",
                    f"cleaned ({_e(p['status'])})<br>rank {rank(slug_v)}") if q_side != "raw"
               else f"<div class=small>rank {rank(slug_v)} with the {_e(_mode_text(cat_side))} catalog</div>")
            + match(slug_b, "raw") + match(slug_v, cat_side)
            + f"<div class=small>{_e(p['path'])}<br>{_e(p['reasons'])}</div></div>")
    return "".join(blocks)


def _review(ev: Evaluation) -> str:
    flagged = [p for p in ev.photos if p["status"] == "needs_review"]
    if not flagged:
        return "<p>No photo was flagged.</p>"
    figs = "".join(_fig(thumbnail(p["cleaned_path"] or p["path"], 140),
                        f"{_e(Path(p['path']).name)}<br>{_e(p['reasons'])}") for p in flagged[:REVIEW_THUMBS])
    rest = "".join(f"<li>{_e(p['path'])}: {_e(p['reasons'])}</li>" for p in flagged[REVIEW_THUMBS:])
    return (f"<p>{len(flagged)} of {len(ev.photos)} photos need review (the cleanup did not trust its mask "
            f"and kept the original background, or another check failed).</p><div class=grid>{figs}</div>"
            + (f"<ul>{rest}</ul>" if rest else ""))


def _failed_checks(path: str, config) -> str:
    """The readiness checks a photo file fails as it is (``shelfready check``), as text."""
    from hygiene import check
    from photos.io import load_image
    from photos.keys import one_line

    try:
        failed = check(load_image(path), config)["failed"]
    except (ValueError, OSError) as exc:
        return f"unreadable ({_e(one_line(exc))})"
    return "<span class=ok>ready</span>" if not failed else f"fails {_e(', '.join(failed))}"


STATUS_TEXT = {"cleaned": "<span class=ok>cleaned: white background</span>",
               "needs_review": "<span class=bad>needs review: mask not trusted, background kept</span>",
               "failed": "<span class=bad>failed</span>"}


def _gallery(ev: Evaluation) -> str:
    """Raw | cleaned thumbnails of every cleaned photo (up to GALLERY_MAX a part), with status and checks."""
    from hygiene.config import CheckConfig, CleanConfig

    cc = ev.settings["clean_config"]
    config = CleanConfig(preset=cc["preset"], checks=CheckConfig(**cc["checks"]))
    parts = []
    for side, (name, rows) in enumerate((("Query photos", ev.photos), ("Catalog items", ev.catalog))):
        if all(v.split("/")[side] == "raw" for v in ev.variants):
            continue  # this side is cleaned only to measure the reasons
        done = [r for r in rows if r.get("cleaned_path")]
        if not done:
            continue
        figs = []
        for r in done[:GALLERY_MAX]:
            reasons = f"<br>{_e(r['reasons'])}" if r.get("reasons") else ""
            figs.append(
                f"<figure><div class=two><img src='{thumbnail(r['path'], GALLERY_PX)}' alt='raw'>"
                f"<img src='{thumbnail(r['cleaned_path'], GALLERY_PX)}' alt='cleaned'></div><figcaption>"
                f"<b>{_e(r['label'])}</b> {_e(Path(r['path']).name)}<br>"
                f"{STATUS_TEXT.get(r['status'], _e(r['status']))}{reasons}<br>"
                f"raw photo: {_failed_checks(r['path'], config)}<br>"
                f"cleaned photo: {_failed_checks(r['cleaned_path'], config)}</figcaption></figure>")
        shown = f"the first {GALLERY_MAX} of {len(done)}" if len(done) > GALLERY_MAX else f"all {len(done)}"
        parts.append(f"<h3>{name}: {shown}</h3><div class=ba>{''.join(figs)}</div>")
    if not parts:
        return "<p>No photo was cleaned in this evaluation (raw variants only).</p>"
    return (f"<p class=small>Each pair: the photo as given | as cleaned (preset {_e(cc['preset'])}). "
            "Checks: the readiness rules the file fails as it is (<code>shelfready check</code>).</p>"
            + "".join(parts))


def _models_used(ev: Evaluation, cc: dict) -> str:
    """The remover setting and, with a cascade, how many query masks each remover made."""
    text = cc["model"]
    if cc.get("fallback_model"):
        counts: dict[str, int] = {}
        for p in ev.photos:
            if p.get("model"):
                counts[p["model"]] = counts.get(p["model"], 0) + 1
        made = ", ".join(f"{m}: {n}" for m, n in sorted(counts.items()))
        chain = ", then ".join(cc["fallback_model"].split(","))
        text += f" then {chain} for cut-outs the gate did not trust (query masks by {made})"
    return text


def _reasons_html(ev: Evaluation) -> str:
    """The reasons block: plain sentences, the conditions with CIs against chance, per class."""
    r = ev.reasons
    if not r:
        return "<p>Reasons were not measured in this run (EvalConfig.reasons.enabled is off).</p>"
    if "error" in r:
        return f"<p class=bad>Reasons could not be measured: {_e(r['error'])}</p>"
    lvl = ci_level(ev)
    sentences = r.get("sentences", [])
    head = f"<p><b>{_e(sentences[0])}</b></p>" if sentences else ""
    rest = "".join(f"<li>{_e(x)}</li>" for x in sentences[1:])
    rows = []
    for c, vals in r["conditions"].items():
        rows.append(f"<tr><td class=l>{_e(r['condition_text'][c])}</td><td>{_fmt_ci(vals['R@1'])}</td>"
                    f"<td>{_fmt_ci(vals['MRR'])}</td></tr>")
    rows.append(f"<tr><td class=l>chance (a random ranking)</td><td>{r['chance']['R@1']:.3f}</td>"
                f"<td>{r['chance']['MRR']:.3f}</td></tr>")
    table = (f"<table><tr><th class=l>what the embedder is shown, queries and catalog alike</th>"
             f"<th>R@1</th><th>MRR</th></tr>{''.join(rows)}</table>")
    v = r["variant"]
    crow = []
    for lab, row in r["by_class"].items():
        cells = [f"{row['n']}"]
        if "MRR_change" in row:
            cells += [f"{row['MRR_' + ev.baseline]:.3f}", f"{row['MRR_' + v]:.3f}", f"{row['MRR_change']:+.3f}"]
        cells += [f"{row.get('R@1_' + c, float('nan')):.3f}" for c in ("raw", "product-grey", "background")]
        cells.append(f"{row['chance_R@1']:.3f}")
        crow.append(f"<tr><td class=l>{_e(lab)}</td>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    mrr_head = (f"<th>MRR {_e(ev.baseline)}</th><th>MRR {_e(v)}</th><th>change</th>"
                if crow and "MRR_change" in next(iter(r["by_class"].values())) else "")
    per_class = (f"<table><tr><th class=l>class</th><th>n</th>{mrr_head}<th>R@1 raw</th>"
                 f"<th>R@1 product alone</th><th>R@1 background alone</th><th>R@1 chance</th></tr>"
                 f"{''.join(crow)}</table>")
    left = r.get("left_out", {})
    if "removal" in r and "framing" in r:
        table += ("<p class=small>Cleanup in two steps, R@1: taking the background away (product alone on white, "
                  f"the photo's framing, minus raw) {_fmt_ci(r['removal']['R@1'], True)}; reframing (cleaned minus "
                  f"that) {_fmt_ci(r['framing']['R@1'], True)}.</p>")
    note = (f"<p class=small>Measured on the same photos ({r['n_queries']} queries, {r['n_catalog']} catalog "
            f"items{'; left out for want of a mask: ' + str(left) if any(left.values()) else ''}), both sides "
            f"shown the same way, at the photo's own framing, with the cleanup's own mask; grey level "
            f"{r['grey']}. Brackets: {lvl} bootstrap CI over query photos (paired for differences). Chance: "
            "the expected score of a random ranking of this catalog.</p>")
    return f"{head}<ul>{rest}</ul>{table}{note}<h3>By class</h3>{per_class}"


def _opinions_html(ev: Evaluation) -> str:
    """Second opinions: the same question under other embedders (``evaluate --embedders``)."""
    if not ev.opinions:
        return ""
    from .opinions import agreement, sentence

    combined = {"opinions": ev.opinions, "agreement": agreement(ev.opinions)}
    rows = "".join(
        f"<tr><td class=l>{_e(o['embedder'])}</td><td>{o['mrr_raw']:.3f}</td><td>{o['mrr']:.3f}</td>"
        f"<td>{_fmt_ci(o['diff'], True)}</td><td>{o['wilcoxon_p_rr']:.3g}</td><td class=l>{_e(o['verdict'])}</td></tr>"
        for o in ev.opinions)
    return (f"<h2>Second opinion: other embedders</h2><p><b>{_e(sentence(combined, ci_level(ev)))}</b></p>"
            f"<table><tr><th class=l>embedder</th><th>MRR {_e(ev.baseline)}</th><th>MRR {_e(ev.headline)}</th>"
            f"<th>difference</th><th>Wilcoxon p</th><th class=l>verdict</th></tr>{rows}</table>"
            "<p class=small>A gain or a loss is called robust only when every embedder's difference has the "
            "same sign and each CI excludes 0. This report's other sections are for the first embedder.</p>")


def render_html(ev: Evaluation, title: str) -> str:
    s = ev.settings
    cc = s["clean_config"]
    verdicts, others = [], []
    for v in [ev.headline] + [v for v in ev.variants if v not in (ev.baseline, ev.headline)]:
        kind = {"gain": "gain", "loss": "loss"}.get(ev.comparisons[v]["verdict"], "none")
        (verdicts if v == ev.headline else others).append(
            f"<div class='verdict {kind}'>{_e(verdict_sentence(ev, v))}</div>")
    if others:
        verdicts.append("<h3>Other variants (they answer other questions)</h3>" + "".join(others))
    opening = ""
    if ev.scenario:
        sc = ev.scenario
        opening = (f"<p class=question><b>{_e(sc['title'])}.</b> {_e(sc['question'])}<br>"
                   f"<span class=small>Compared: {_e(sc['setup'])} (scenario <code>{_e(sc['name'])}</code>; "
                   f"other scenarios: <code>shelfready evaluate --scenario</code>).</span></p>")
    sections = [
        f"<h1>{_e(title)}</h1>", opening,
        f"<p class=small>Embedder {_e(s['embedder'])}; cleanup model {_e(_models_used(ev, cc))}, preset "
        f"{_e(cc['preset'])}; {s['n_queries']} query photos, {s['n_catalog']} catalog items; "
        f"{_e(s['ranking'])}; {ci_level(ev)} bootstrap CIs over photos ({s['eval_config']['resamples']} resamples, "
        f"seed {s['eval_config']['seed']}); verdict = MRR difference CI excludes 0 and Wilcoxon "
        f"p &lt; {s['eval_config']['alpha']}. {_e(s.get('note', ''))}</p>",
        f"<h2>Verdict</h2>{''.join(verdicts)}",
        f"<h2>Why</h2>{_reasons_html(ev)}",
        _opinions_html(ev),
        f"<h2>Numbers</h2>{_metrics_table(ev)}"
        "<p class=small>R@k = share of photos with a correct item in the top k; P@k = share of the top k "
        f"that is correct; mAP and MRR over the full ranking. Brackets: {ci_level(ev)} CI.</p>",
        f"<h2>Before and after</h2>{_gallery(ev)}",
        f"<h2>Recall@k</h2><img src='{recall_curve_plot(ev)}' alt='recall at k'>",
    ]
    for v in [ev.headline] + [v for v in ev.variants if v not in (ev.baseline, ev.headline)]:
        sections += [
            f"<h2>Rank changes: {_e(VARIANT_TEXT[v])}</h2><img src='{rank_change_plot(ev, v)}' alt='rank changes'>",
            f"<h3>Gained most</h3>{_examples(ev, v, True)}",
            f"<h3>Lost most</h3>{_examples(ev, v, False)}",
        ]
    sections += [f"<h2>By class</h2>{_class_table(ev)}", f"<h2>Needs review</h2>{_review(ev)}"]
    if ev.excluded:
        items = "".join(f"<li>{_e(x['path'])} ({_e(x['side'])}, {_e(x['variant'])}): {_e(x['error'])}</li>"
                        for x in ev.excluded)
        sections.append(f"<h2>Left out</h2><ul>{items}</ul>")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}{RENDER_CHECK}</body></html>")
