"""Web atlas benchmark in headless Chromium, each figure beside its same-run reference.

    python benchmarks/web.py [--n 100000] [--repeats 5]

1. A store of --n ECGs: the sample corpus ingested for real (`ecg-atlas ingest`, tiny ECG-FM
   checkpoint), then synthetic rows up to --n upserted directly with ``ecg_atlas.index.Store``,
   each a real record vector mixed with another real one plus a little noise (as
   benchmarks/store.py does) and the label_groups list of a random real ECG, and a cluster run
   over all of them with synthetic 2-D coordinates (20 Gaussian blobs) and its enrichment table
   (analysis.enrichment over those clusters and label_groups).
2. A real `ecg-atlas serve` on that store and a real `ecg-atlas web` in front of it.
3. Chromium (Debian's, headless, software WebGL) measures:
   * map interactive: navigation start -> the scattergl map of every point drawn with its event
     handlers attached (``performance.now()`` when the page marks it ready);
   * colour change: the colour select set to a column -> the map redrawn in it (``data-ready``
     moves on), on a freshly loaded map, so the column's first fetch (/api/map-column over the
     Export RPC) is in it: label_groups ("contains" its most frequent label) and age; then
     switching the "contains" label (no request: the page holds the column);
   * find an id: the find box submitted -> the point highlighted and centred;
   * thumbnail: /api/thumb for ECGs not asked before (GetSignal, one lead as an envelope), from
     the page's own fetch;
   * pan/zoom frame time: 20 relayouts of the map's ranges (zoom and pan steps), each awaited to
     the next animation frame; and the frame interval (requestAnimationFrame) while the mouse drags
     the map in pan mode;
   * click-to-neighbours: a real mouse click on a map point -> that ECG's k=5 neighbours listed
     in the search view, against the bare Search RPC (Python client, same id, same k) and the
     web's /api/search over HTTP, all in this run.

With --reference-static DIR (e.g. the page of an earlier commit: ``git archive REV
ecg_atlas/web/static | tar -x -C /tmp/ref``, then DIR = /tmp/ref/ecg_atlas/web/static) a second
web process serves that page from the same server, and "map interactive" is measured on the two
pages alternately, so the comparison shares the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.service.conftest import WRITE_TOKEN, cli_json, start_server
from tests.web.conftest import CHROMEDRIVER, chromium_options, start_web

RUN = "bench_map"
LABELS = "label_groups"


def build_store(root: Path, n: int) -> tuple[Path, Path]:
    from ecg_atlas.client import Client

    shared = Path(os.environ.get("ECG_ATLAS_SHARED_DATA", REPO.parent / "shared" / "data"))
    checkpoint, ecg_dir = shared / "parity" / "tiny_pretrained.pt", shared / "ecg"
    store_dir = root / "store"
    server = start_server(store_dir, checkpoint, root / "logs")
    try:
        cli_json("ingest", str(ecg_dir), "--metadata", str(ecg_dir / "manifest.csv"), "--id-column", "record",
                 "--server", server.address, "--token", WRITE_TOKEN)
        with Client(server.address, token=WRITE_TOKEN) as client:
            import pyarrow as pa

            table = pa.Table.from_batches(list(client.export(columns=["age", "sex", LABELS], vectors=True)))
    finally:
        server.stop()
    real = np.stack(table.column("record_vector").to_numpy(zero_copy_only=False)).astype(np.float32)
    add_synthetic(store_dir, real, n - len(real), table.column("ecg_id").to_pylist(), table.column(LABELS).to_pylist())
    return store_dir, checkpoint


def add_synthetic(store_dir: Path, real: np.ndarray, n_new: int, real_ids: list[str],
                  real_labels: list[list[str] | None]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ecg_atlas.analysis.store_io import run_dir
    from ecg_atlas.index import Store

    rng = np.random.default_rng(0)
    store = Store.open(store_dir)
    identity = store.info().identity
    ids, labels = [], list(real_labels)
    for start in range(0, n_new, 5000):
        stop = min(n_new, start + 5000)
        a, b = rng.integers(0, len(real), (2, stop - start))
        w = rng.uniform(0.6, 0.9, (stop - start, 1)).astype(np.float32)
        noise = rng.standard_normal((stop - start, real.shape[1]), dtype=np.float32)
        x = w * real[a] + (1 - w) * real[b] + 0.02 * noise
        batch = [f"synthetic/{i:06d}" for i in range(start, stop)]
        store.upsert(batch, x, identity=identity,
                     patient_ids=[f"synthetic-patient-{i // 3}" for i in range(start, stop)],
                     metadata=[{"age": int(20 + i % 70), "sex": "F" if i % 2 else "M", LABELS: real_labels[j]}
                               for i, j in zip(range(start, stop), a)])
        ids += batch
        labels += [real_labels[j] for j in a]
    every = real_ids + ids
    centres = rng.uniform(-20, 20, (20, 2))
    cluster = rng.integers(0, 20, len(every))
    xy = centres[cluster] + rng.standard_normal((len(every), 2)) * rng.uniform(0.5, 2.5, (20, 1))[cluster]
    cluster[rng.random(len(every)) < 0.1] = -1
    where = run_dir(store, RUN)
    where.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"ecg_id": every, "cluster": cluster.astype(np.int64),
                             "probability": np.ones(len(every)), "outlier_score": np.zeros(len(every)),
                             "map_x": xy[:, 0], "map_y": xy[:, 1]}), where / "assignments.parquet")
    (where / "enrichment.csv").write_text(enrichment_csv(cluster, labels))
    (where / "run.json").write_text(json.dumps({
        "run": RUN, "columns": [], "where": [], "n_ecgs": len(every), "synthetic_coordinates": True,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())}))
    store.close()


def enrichment_csv(cluster: np.ndarray, labels: list[list[str] | None]) -> str:
    """The run's enrichment table as `cluster` writes it: each label_groups label in each cluster."""
    from ecg_atlas.analysis.enrichment import enrichment

    names = sorted({label for row in labels if row for label in row})
    y = np.array([[np.nan] * len(names) if row is None else [float(n in row) for n in names] for row in labels])
    return enrichment(cluster, y, [f"{LABELS}:{n}" for n in names]).to_csv()


def wait(driver, script: str, timeout: float = 120.0):
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.02)
    raise TimeoutError(script)


LAUNCH_WITH_STATIC = """
import sys
from pathlib import Path

import ecg_atlas.web.app as app
from ecg_atlas.cli import main

app.STATIC = Path(sys.argv.pop(1))
sys.exit(main(sys.argv[1:]))
"""


def start_reference_web(address: str, log_dir: Path, static: Path):
    """An `ecg-atlas web` on the same server serving the page (html, css, js) in `static`."""
    import subprocess
    from types import SimpleNamespace

    log_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "-c", LAUNCH_WITH_STATIC, str(static), "web", "--server", address,
                                "--port", "0", "--json"], stdout=subprocess.PIPE, stderr=open(log_dir / "web.log", "w"),
                               text=True, env={**os.environ, "ECG_ATLAS_TOKEN": WRITE_TOKEN})
    line = process.stdout.readline()
    if not line.startswith("{"):
        process.kill()
        raise RuntimeError(f"the reference web did not start: {(log_dir / 'web.log').read_text()[-2000:]}")
    return SimpleNamespace(process=process, url=json.loads(line)["url"])


def open_map(driver, url: str) -> float:
    driver.get(f"{url}?view=map&run={RUN}")
    return float(wait(driver, "return document.getElementById('map-plot').dataset.ready"))


PAN_ZOOM = """
const done = arguments[0], gd = document.getElementById('map-plot');
const x0 = gd._fullLayout.xaxis.range.slice(), y0 = gd._fullLayout.yaxis.range.slice(), frames = [];
(async () => {
  for (let i = 0; i < 20; i++) {
    const zoom = 1 - 0.03 * i, shift = 0.02 * i * (x0[1] - x0[0]);
    const t = performance.now();
    await Plotly.relayout(gd, {'xaxis.range': [x0[0] * zoom + shift, x0[1] * zoom + shift],
                               'yaxis.range': [y0[0] * zoom, y0[1] * zoom]});
    await new Promise((r) => requestAnimationFrame(() => r()));
    frames.push(performance.now() - t);
  }
  done(frames);
})();"""

FRAMES_START = """
window.benchFrames = []; window.benchOn = true;
const tick = (t) => { window.benchFrames.push(t); if (window.benchOn) requestAnimationFrame(tick); };
requestAnimationFrame(tick);
return Plotly.relayout(document.getElementById('map-plot'), {dragmode: 'pan'});"""


def drag_frames(driver) -> list[float]:
    """Frame intervals while the mouse pans the map (plotly's drag path), from requestAnimationFrame."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    plot = driver.find_element(By.ID, "map-plot")
    driver.execute_script(FRAMES_START)
    chain = ActionChains(driver).move_to_element(plot).click_and_hold()
    for step in range(40):
        chain.move_by_offset(6 if step < 20 else -6, 3 if step % 2 else -3)
    chain.release().perform()
    stamps = driver.execute_script("window.benchOn = false; return window.benchFrames")
    return list(np.diff(stamps))


POINT = """
const gd = document.getElementById('map-plot'), xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
const t = gd.data[arguments[0]], i = arguments[1];
return {px: xa._offset + xa.l2p(t.x[i]), py: ya._offset + ya.l2p(t.y[i]), id: t.text[i].split('<br>')[0]};"""


RECOLOUR = """
const [select, value, done] = [document.getElementById(arguments[0]), arguments[1], arguments[2]];
const gd = document.getElementById('map-plot'), before = gd.dataset.ready, t = performance.now();
select.value = value;
select.dispatchEvent(new Event('change'));
const poll = () => (gd.dataset.ready !== before ? done(performance.now() - t) : setTimeout(poll, 2));
poll();"""

FIND = """
const [id, done] = [arguments[0], arguments[1]], gd = document.getElementById('map-plot'), t = performance.now();
document.getElementById('map-find').value = id;
document.getElementById('map-form').requestSubmit();
const poll = () => (gd.dataset.found === id ? done(performance.now() - t) : setTimeout(poll, 2));
poll();"""

THUMBS = """
const [ids, done] = [arguments[0], arguments[1]], out = [];
(async () => {
  for (const id of ids) {
    const t = performance.now();
    const answer = await fetch(`/api/thumb?id=${encodeURIComponent(id)}`);
    await answer.json();
    out.push(performance.now() - t);
  }
  done(out);
})();"""


def colour_changes(driver, url: str, repeats: int, reference_url: str | None = None) -> dict[str, list[float]]:
    """ms from a colour (or label) select's change to the map redrawn in it, each on a fresh map;
    with a reference page, its change to age too, alternating (an earlier page reads this
    server's /api/map-column for age as it always did; label lists come in a new shape)."""
    out = {"label_groups_first": [], "age_first": [], "label_switch": []}
    if reference_url:
        out["reference_age_first"] = []
    for _ in range(repeats):
        open_map(driver, url)
        out["label_groups_first"].append(driver.execute_async_script(RECOLOUR, "map-colour", LABELS))
        second = driver.execute_script("return document.getElementById('map-label').options[1].value")
        out["label_switch"].append(driver.execute_async_script(RECOLOUR, "map-label", second))
        for page, key in ((url, "age_first"), (reference_url, "reference_age_first")):
            if page:
                open_map(driver, page)
                out[key].append(driver.execute_async_script(RECOLOUR, "map-colour", "age"))
    return out


def click_to_neighbours(driver, url: str, repeats: int) -> tuple[list[float], list[str]]:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    times, ids = [], []
    for r in range(repeats):
        open_map(driver, url)
        plot = driver.find_element(By.ID, "map-plot")
        n_traces = driver.execute_script("return document.getElementById('map-plot').data.length")
        # the last point of a trace is drawn on top of its own trace; the last trace on top of all
        point = driver.execute_script(POINT, n_traces - 1, r * 7)
        size = plot.size
        ActionChains(driver).move_to_element_with_offset(
            plot, point["px"] - size["width"] / 2, point["py"] - size["height"] / 2).pause(0.5).click().perform()
        rendered = wait(driver, "const n = document.getElementById('neighbours');"
                                "return n.dataset.count === '5' && document.body.dataset.view === 'search'"
                                " && n.dataset.rendered")
        clicked = driver.execute_script("return window.atlasClickedAt")
        times.append(float(rendered) - float(clicked))
        ids.append(driver.find_element(By.CSS_SELECTOR, "#query-card h3 strong").text)
    return times, ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--reference-static", type=Path, help="also time map interactive on this page (see above)")
    args = p.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from ecg_atlas.client import Client

    root = Path(tempfile.mkdtemp(prefix="atlas-web-bench-"))
    t = time.perf_counter()
    store_dir, checkpoint = build_store(root, args.n)
    build_s = time.perf_counter() - t
    server = start_server(store_dir, checkpoint, root / "logs")
    web = start_web(server.address, root / "web")
    reference = (start_reference_web(server.address, root / "web-reference", args.reference_static)
                 if args.reference_static else None)
    options = chromium_options("1500,1000")
    options.add_argument(f"--user-data-dir={root / 'chromium'}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(120)
    try:
        with Client(server.address, token=WRITE_TOKEN) as client:
            n_stored = int(client.info()["ecg_count"])
            open_map(driver, web.url)  # warm: the browser's caches and the server's first export
            ready, reference_ready = [], []
            if reference:
                open_map(driver, reference.url)  # warm
            for _ in range(args.repeats):  # alternating with the reference page, when there is one
                ready.append(open_map(driver, web.url))
                if reference:
                    reference_ready.append(open_map(driver, reference.url))
            open_map(driver, web.url)
            points = int(driver.execute_script("return document.getElementById('map-plot').dataset.points"))
            frames = driver.execute_async_script(PAN_ZOOM)
            open_map(driver, web.url)
            dragging = drag_frames(driver)
            colours = colour_changes(driver, web.url, args.repeats, reference.url if reference else None)
            run_ids = client.cluster_run(RUN)["assignments"].column("ecg_id").to_pylist()
            open_map(driver, web.url)
            finds = [driver.execute_async_script(FIND, run_ids[(i * 7919) % len(run_ids)])
                     for i in range(args.repeats)]
            real_ids = [e for e in run_ids if not e.startswith("synthetic/")]
            thumbs = driver.execute_async_script(THUMBS, real_ids[: 2 * args.repeats])
            clicks, ids = click_to_neighbours(driver, web.url, args.repeats)
            rpc, http = [], []
            for ecg_id in ids:
                for _ in range(5):
                    s = time.perf_counter()
                    client.search(ecg_id=ecg_id, k=5, exclude_self=True)
                    rpc.append(1000 * (time.perf_counter() - s))
                    s = time.perf_counter()
                    web.request("/api/search?" + urllib.parse.urlencode({"id": ecg_id, "k": 5}))
                    http.append(1000 * (time.perf_counter() - s))
    finally:
        driver.quit()
        web.process.terminate()
        if reference:
            reference.process.terminate()
        server.stop()
    med = statistics.median
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_1_5_15": [round(x, 1) for x in os.getloadavg()],
        "utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "stored_ecgs": n_stored, "map_points": points, "store_build_s": round(build_s, 1),
        "map_interactive_ms": {"median": round(med(ready)), "max": round(max(ready)), "all": [round(x) for x in ready]},
        "reference_map_interactive_ms": (
            {"median": round(med(reference_ready)), "max": round(max(reference_ready)),
             "all": [round(x) for x in reference_ready], "page": str(args.reference_static)} if reference else None),
        "pan_zoom_frame_ms": {"median": round(med(frames), 1), "p95": round(float(np.percentile(frames, 95)), 1),
                              "max": round(max(frames), 1)},
        "drag_pan_frame_ms": {"median": round(med(dragging), 1), "p95": round(float(np.percentile(dragging, 95)), 1),
                              "frames": len(dragging)},
        "colour_change_ms": {k: {"median": round(med(v)), "max": round(max(v)), "all": [round(x) for x in v]}
                             for k, v in colours.items()},
        "find_id_ms": {"median": round(med(finds)), "max": round(max(finds))},
        "thumbnail_fetch_ms": {"median": round(med(thumbs), 1), "max": round(max(thumbs), 1), "n": len(thumbs)},
        "click_to_neighbours_ms": {"median": round(med(clicks), 1), "max": round(max(clicks), 1)},
        "bare_search_rpc_ms": {"median": round(med(rpc), 2)},
        "web_api_search_http_ms": {"median": round(med(http), 2)},
        "click_beyond_rpc_ms": round(med(clicks) - med(rpc), 1),
        "click_over_rpc_ratio": round(med(clicks) / med(rpc), 1),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
