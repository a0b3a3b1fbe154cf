// decrappify web page: pick or drop a picture, send it to POST /v1/restore, compare before/after, download.
// A video goes to POST /v1/jobs instead; the page polls the job, shows its progress, then plays the result.
// Plain JavaScript, no dependencies. The token (if any) is kept in memory only and sent as a bearer token.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("form");
  const drop = $("drop");
  const fileInput = $("file");
  const fileName = $("file-name");
  const modelSelect = $("model");
  const formatSelect = $("format");
  const tokenBox = $("token-box");
  const tokenInput = $("token");
  const goButton = $("go");
  const progress = $("progress");
  const bar = $("bar");
  const statusLine = $("status");
  const errorLine = $("error");
  const result = $("result");
  const compare = $("compare");
  const before = $("before");
  const after = $("after");
  const slider = $("slider");
  const info = $("info");
  const download = $("download");
  const onlyMaskedBox = $("only-masked-box");
  const onlyMasked = $("only-masked");
  const maskImage = $("mask");
  const showMaskBox = $("show-mask-box");
  const showMask = $("show-mask");
  const outscaleSelect = $("outscale");
  const strengthBox = $("strength-box");
  const strengthInput = $("strength");
  const strengthValue = $("strength-value");
  const strengthHint = $("strength-hint");
  const smoothingBox = $("smoothing-box");
  const smoothingInput = $("smoothing");
  const videoResult = $("video-result");
  const videoPlayer = $("video");
  const videoInfo = $("video-info");
  const videoDownload = $("video-download");
  const VIDEO_NAME = /\.(mp4|m4v|mov|mkv|webm|avi|mpe?g|ts|mts|m2ts|wmv|flv|3gp|ogv)$/i;
  const POLL_MS = 500;

  // Browsers cannot show TIFF or BMP everywhere: ask for PNG when "same kind" would give one of those.
  const DISPLAYABLE = new Set(["image/png", "image/jpeg", "image/webp"]);
  const state = { file: null, models: [], limits: null, busy: false, urls: [], textMask: null };

  function showError(message) {
    errorLine.textContent = message;
    errorLine.hidden = !message;
  }

  function authHeaders() {
    const token = tokenInput.value.trim();
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  function formatBytes(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  function updateButton() {
    goButton.disabled = state.busy || !state.file || state.models.length === 0;
  }

  function askForToken(message) {
    tokenBox.open = true;
    tokenInput.focus();
    showError(message);
  }

  async function loadModels() {
    modelSelect.disabled = true;
    let response;
    try {
      response = await fetch("/v1/models", { headers: authHeaders(), cache: "no-store" });
    } catch (err) {
      showError("Cannot reach the server.");
      return;
    }
    if (response.status === 401) {
      state.models = [];
      modelSelect.replaceChildren(new Option("enter the access token", ""));
      askForToken("This server needs an access token.");
      updateButton();
      return;
    }
    if (!response.ok) {
      showError(await errorMessage(response));
      return;
    }
    const body = await response.json();
    state.models = body.models;
    state.limits = body.limits;
    state.video = body.video || null;
    modelSelect.replaceChildren(
      ...body.models.map((m) => new Option(`${m.name} (${m.task}, x${m.scale})`, m.name, false, m.name === body.default)),
    );
    modelSelect.disabled = false;
    state.textMask = body.text_mask || null;
    updateMaskOption();
    updateStrength();
    if (errorLine.textContent.includes("token")) showError("");
    updateButton();
  }

  // "Repair only the watermark" needs the server's text-mask model and a same-size (x1) restoration model.
  function updateMaskOption() {
    const model = state.models.find((m) => m.name === modelSelect.value);
    onlyMaskedBox.hidden = !(state.textMask && model && model.scale === 1);
  }
  modelSelect.addEventListener("change", updateMaskOption);
  showMask.addEventListener("change", () => {
    maskImage.hidden = !showMask.checked;
  });

  // The text mask of the uploaded picture, laid over the comparison (red on text, transparent elsewhere).
  async function showTextMask(file) {
    maskImage.hidden = true;
    showMaskBox.hidden = true;
    if (!state.textMask) return;
    const data = new FormData();
    data.append("image", file, file.name);
    const response = await fetch("/v1/detect", { method: "POST", headers: authHeaders(), body: data });
    if (!response.ok) return;
    if (!(await loaded(maskImage, objectUrl(await response.blob())))) return;
    maskImage.hidden = !showMask.checked;
    showMaskBox.hidden = false;
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error) return body.error;
    } catch (err) {
      // not JSON: fall through
    }
    return `The server answered ${response.status} ${response.statusText}.`;
  }

  function chooseFile(file) {
    if (!file) return;
    showError("");
    videoResult.hidden = true;
    if (isVideo(file)) {
      chooseVideo(file);
      return;
    }
    smoothingBox.hidden = true;
    goButton.textContent = "Restore";
    if (state.limits && file.size > state.limits.max_upload_bytes) {
      showError(`${file.name} is ${formatBytes(file.size)}; the limit is ${formatBytes(state.limits.max_upload_bytes)}.`);
      return;
    }
    state.file = file;
    fileName.textContent = `${file.name} · ${formatBytes(file.size)}`;
    updateButton();
  }

  fileInput.addEventListener("change", () => chooseFile(fileInput.files[0]));

  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("dragging"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    chooseFile(event.dataTransfer.files[0]);
  });
  // A picture dropped next to the zone must not replace the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  window.addEventListener("paste", (event) => {
    const item = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (item) chooseFile(item);
  });
  tokenInput.addEventListener("change", loadModels);

  function setSplit(value) {
    compare.style.setProperty("--split", `${value}%`);
  }
  slider.addEventListener("input", () => setSplit(slider.value));

  function startProgress() {
    progress.hidden = false;
    bar.value = 0;
    statusLine.textContent = "Uploading…";
  }

  function restoringProgress() {
    bar.removeAttribute("value"); // indeterminate
    const start = performance.now();
    const tick = () => {
      const seconds = Math.round((performance.now() - start) / 1000);
      statusLine.textContent = `Restoring… ${seconds} s`;
    };
    tick();
    return setInterval(tick, 500);
  }

  function send(data, url = "/v1/restore") {
    // XMLHttpRequest rather than fetch: it reports upload progress.
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      let timer = null;
      xhr.open("POST", url);
      xhr.responseType = "blob";
      for (const [key, value] of Object.entries(authHeaders())) xhr.setRequestHeader(key, value);
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) bar.value = (100 * event.loaded) / event.total;
      });
      xhr.upload.addEventListener("load", () => {
        timer = restoringProgress();
      });
      xhr.addEventListener("load", () => {
        clearInterval(timer);
        resolve(xhr);
      });
      xhr.addEventListener("error", () => {
        clearInterval(timer);
        reject(new Error("The connection to the server failed."));
      });
      xhr.send(data);
    });
  }

  async function xhrError(xhr) {
    try {
      const body = JSON.parse(await xhr.response.text());
      if (body && body.error) return body.error;
    } catch (err) {
      // not JSON
    }
    return `The server answered ${xhr.status}.`;
  }

  function filenameFrom(xhr, fallback) {
    const header = xhr.getResponseHeader("Content-Disposition") || "";
    const match = /filename="([^"]+)"/.exec(header);
    return match ? match[1] : fallback;
  }

  function loaded(img, url) {
    return new Promise((resolve) => {
      img.onload = () => resolve(true);
      img.onerror = () => resolve(false);
      img.src = url;
    });
  }

  function objectUrl(blob) {
    const url = URL.createObjectURL(blob);
    state.urls.push(url);
    return url;
  }

  async function showResult(xhr, file, seconds) {
    for (const url of state.urls.splice(0)) URL.revokeObjectURL(url);
    const afterUrl = objectUrl(xhr.response);
    if (!(await loaded(after, afterUrl))) throw new Error("The browser cannot display the restored picture.");
    const shown = await loaded(before, objectUrl(file));
    before.hidden = !shown;
    compare.style.setProperty("--ratio", `${after.naturalWidth / after.naturalHeight}`);
    slider.value = 50;
    setSplit(50);
    const source = shown ? `${before.naturalWidth} × ${before.naturalHeight} → ` : "";
    const model = xhr.getResponseHeader("X-Decrappify-Model") || modelSelect.value;
    info.textContent =
      `${source}${after.naturalWidth} × ${after.naturalHeight} · ${model} · ` +
      `${seconds.toFixed(1)} s · ${formatBytes(xhr.response.size)}`;
    download.href = afterUrl;
    download.download = filenameFrom(xhr, "restored");
    result.hidden = false;
    result.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!state.file || state.busy) return;
    const file = state.file;
    if (isVideo(file)) {
      await restoreVideo(file);
      return;
    }
    const data = new FormData();
    data.append("image", file, file.name);
    data.append("model", modelSelect.value);
    let format = formatSelect.value;
    if (format === "auto" && !DISPLAYABLE.has(file.type)) format = "png";
    data.append("format", format);
    if (!onlyMaskedBox.hidden && onlyMasked.checked) data.append("only_masked", "true");
    appendScaleAndStrength(data);
    state.busy = true;
    updateButton();
    showError("");
    startProgress();
    const start = performance.now();
    try {
      const xhr = await send(data);
      if (xhr.status === 401) {
        askForToken(await xhrError(xhr));
      } else if (xhr.status !== 200) {
        const retry = xhr.getResponseHeader("Retry-After");
        showError((await xhrError(xhr)) + (retry ? ` (try again in ${retry} s)` : ""));
      } else {
        await showResult(xhr, file, (performance.now() - start) / 1000);
        await showTextMask(file);
      }
    } catch (err) {
      showError(err.message);
    } finally {
      progress.hidden = true;
      state.busy = false;
      updateButton();
    }
  });

  // ---- output size and strength (both kinds of upload) ----

  // The strength slider: only for a model whose file names a pair to mix with (GET /v1/models "strength").
  function updateStrength() {
    const model = state.models.find((m) => m.name === modelSelect.value);
    const pair = model && model.strength;
    strengthBox.hidden = !pair;
    if (pair) {
      const how = pair.mode === "blend" ? "outputs blended" : "weights interpolated";
      strengthHint.textContent = `0: ${model.name} as it is · 1: ${pair.pair} (${how})`;
    }
  }
  modelSelect.addEventListener("change", updateStrength);
  strengthInput.addEventListener("input", () => {
    strengthValue.textContent = Number(strengthInput.value).toFixed(2);
  });

  function appendScaleAndStrength(data) {
    if (outscaleSelect.value) data.append("outscale", outscaleSelect.value);
    if (!strengthBox.hidden && Number(strengthInput.value) > 0) data.append("strength", strengthInput.value);
  }

  // ---- videos: POST /v1/jobs, then poll GET /v1/jobs/ID until done, then fetch the result ----

  function isVideo(file) {
    return file.type.startsWith("video/") || VIDEO_NAME.test(file.name);
  }

  function chooseVideo(file) {
    if (!state.video) {
      showError("This server does not take videos.");
      return;
    }
    if (file.size > state.video.max_video_bytes) {
      showError(`${file.name} is ${formatBytes(file.size)}; the limit for videos is ${formatBytes(state.video.max_video_bytes)}.`);
      return;
    }
    state.file = file;
    fileName.textContent = `${file.name} · ${formatBytes(file.size)} · up to ${state.video.max_video_seconds} s`;
    smoothingBox.hidden = false;
    goButton.textContent = "Restore the video";
    updateButton();
  }

  function formatSeconds(seconds) {
    if (seconds < 90) return `${Math.round(seconds)} s`;
    return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  }

  function showJobProgress(job) {
    if (job.status === "queued") {
      bar.removeAttribute("value");
      statusLine.textContent = "Waiting for a free worker…";
      return;
    }
    if (job.progress != null) bar.value = 100 * job.progress;
    const total = job.frames_total ? ` / ${job.frames_total}` : "";
    const parts = [`Restoring the video: ${job.frames_done}${total} frames`];
    if (job.frames_per_second) parts.push(`${job.frames_per_second.toFixed(1)} frames/s`);
    if (job.eta_s != null) parts.push(`about ${formatSeconds(job.eta_s)} left`);
    statusLine.textContent = parts.join(" · ");
  }

  async function pollJob(job) {
    while (job.status === "queued" || job.status === "running") {
      showJobProgress(job);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      const response = await fetch(job.status_url, { headers: authHeaders(), cache: "no-store" });
      if (!response.ok) throw new Error(await errorMessage(response));
      job = await response.json();
    }
    if (job.status !== "done") {
      showError(job.error || `The video job was ${job.status}.`);
      return null;
    }
    return job;
  }

  async function showVideo(job) {
    statusLine.textContent = "Downloading the restored video…";
    const response = await fetch(job.result.url, { headers: authHeaders(), cache: "no-store" });
    if (!response.ok) throw new Error(await errorMessage(response));
    const blob = await response.blob();
    // The page has the clip now: the server's copy goes (it would be deleted an hour later anyway).
    fetch(job.status_url, { method: "DELETE", headers: authHeaders() }).catch(() => {});
    for (const url of state.urls.splice(0)) URL.revokeObjectURL(url);
    const url = objectUrl(blob);
    videoPlayer.src = url;
    videoDownload.href = url;
    videoDownload.download = job.result.filename;
    const size = job.output ? ` → ${job.output.width} × ${job.output.height}` : "";
    videoInfo.textContent =
      `${job.input.width} × ${job.input.height}${size} · ${job.frames_done} frames · ${job.model} · ` +
      `${formatSeconds(job.elapsed_s)} · ${formatBytes(blob.size)}`;
    result.hidden = true;
    videoResult.hidden = false;
    videoResult.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  async function restoreVideo(file) {
    const data = new FormData();
    data.append("video", file, file.name);
    data.append("model", modelSelect.value);
    appendScaleAndStrength(data);
    if (smoothingInput.checked) data.append("smoothing", "0.5");
    state.busy = true;
    updateButton();
    showError("");
    startProgress();
    try {
      const xhr = await send(data, "/v1/jobs");
      if (xhr.status === 401) {
        askForToken(await xhrError(xhr));
      } else if (xhr.status !== 202) {
        const retry = xhr.getResponseHeader("Retry-After");
        showError((await xhrError(xhr)) + (retry ? ` (try again in ${retry} s)` : ""));
      } else {
        const job = await pollJob(JSON.parse(await xhr.response.text()));
        if (job) await showVideo(job);
      }
    } catch (err) {
      showError(err.message);
    } finally {
      progress.hidden = true;
      state.busy = false;
      updateButton();
    }
  }

  loadModels();
})();
