// The playground: every request goes to this server's public /v1 API, as any client's would.
const $ = (id) => document.getElementById(id);
let imageUrl = null;
let running = null;
const models = new Map();       // id → the /v1/models entry (task, interleaved)
let partCount = 0;

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = `Bearer ${key}`;
  return h;
}

function showError(message) {
  $("error").textContent = message;
}

// The server answers errors in OpenAI's shape; show its message, never a blank.
async function errorOf(response) {
  try {
    const body = await response.json();
    if (body?.error?.message) return `${response.status}: ${body.error.message}`;
  } catch { /* not JSON */ }
  return `${response.status} ${response.statusText || "error"}`;
}

async function loadModels() {
  try {
    const response = await fetch("/v1/models", { headers: headers(false) });
    if (!response.ok) { showError(await errorOf(response)); return; }
    const body = await response.json();
    const select = $("model");
    const chosen = select.value;
    models.clear();
    for (const m of body.data) models.set(m.id, m);
    select.replaceChildren(...body.data.map((m) => new Option(m.id, m.id)));
    if (models.has(chosen)) select.value = chosen;
    showView();
    showError("");
  } catch (e) {
    showError(`The server could not be reached: ${e.message}`);
  }
}

// Reads an image file as a data URL and shows it in img, with its size in caption.
function readImage(file, img, caption, done) {
  const reader = new FileReader();
  reader.onload = () => {
    img.onload = () => { caption.textContent = `${file.name}: ${img.naturalWidth} × ${img.naturalHeight} pixels, ${(file.size / 1024).toFixed(1)} KiB`; };
    img.onerror = () => { caption.textContent = `${file.name}: ${(file.size / 1024).toFixed(1)} KiB (the browser cannot show it; the server will say whether it reads it)`; };
    img.src = reader.result;
    done(reader.result);
  };
  reader.readAsDataURL(file);
}

function useFile(file) {
  if (!file) return;
  if (currentModel()?.interleaved) { addImagePart(file); return; }
  readImage(file, $("thumbnail"), $("image-size"), (url) => { imageUrl = url; $("preview").hidden = false; });
}

function currentModel() {
  return models.get($("model").value);
}

// One view per kind of model: a single image and a question (BLIP-2, InstructBLIP), images and text in order
// (OpenFlamingo, IDEFICS), or captions ranked against an image (a retrieval model's /v1/embeddings).
function showView() {
  const model = currentModel();
  const retrieval = model?.task === "embeddings";
  const interleaved = !retrieval && !!model?.interleaved;
  $("chat-view").hidden = retrieval || interleaved;
  $("interleaved-view").hidden = !interleaved;
  $("retrieval-view").hidden = !retrieval;
  $("image-section").hidden = interleaved;
  $("settings-section").hidden = retrieval;
  $("model-kind").textContent = !model ? "" : retrieval
    ? "A retrieval model: it ranks captions by how well they match the image."
    : interleaved ? "An interleaved model: it reads several images with text between them, in order."
      : "A captioning model: it captions one image or answers a question about it.";
  if (interleaved && $("parts").children.length === 0) {
    if (imageUrl) addPart({ type: "image", url: imageUrl, label: $("image-size").textContent });
    addTextPart("");
  }
}

function addPart(part) {
  const n = ++partCount;
  const li = document.createElement("li");
  li.className = "part";
  li.dataset.type = part.type;
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Remove";
  if (part.type === "image") {
    li.dataset.url = part.url;
    const img = document.createElement("img");
    img.alt = `Image part ${n}`;
    img.src = part.url;
    const caption = document.createElement("span");
    caption.textContent = part.label ?? "";
    li.append(img, caption);
    remove.setAttribute("aria-label", `Remove image part ${n}`);
    part.element?.(img, caption, li);
  } else {
    const id = `part-text-${n}`;
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = `Text part ${n}`;
    const text = document.createElement("textarea");
    text.id = id;
    text.rows = 2;
    text.value = part.text ?? "";
    li.append(label, text);
    remove.setAttribute("aria-label", `Remove text part ${n}`);
  }
  remove.addEventListener("click", () => li.remove());
  li.append(remove);
  $("parts").append(li);
  return li;
}

function addTextPart(text) {
  const li = addPart({ type: "text", text });
  li.querySelector("textarea").focus();
}

function addImagePart(file) {
  if (!file) return;
  addPart({
    type: "image", url: "",
    element: (img, caption, li) => readImage(file, img, caption, (url) => { li.dataset.url = url; }),
  });
}

// The interleaved prompt as chat content parts, in order (empty texts left out).
function interleavedContent() {
  const content = [];
  for (const li of $("parts").children) {
    if (li.dataset.type === "image" && li.dataset.url) content.push({ type: "image_url", image_url: { url: li.dataset.url } });
    if (li.dataset.type === "text") {
      const text = li.querySelector("textarea").value;
      if (text) content.push({ type: "text", text });
    }
  }
  return content;
}

// BLIP-2's image-text similarity: the image embedding is its query rows concatenated, each as wide as a text embedding;
// the score is the best dot product of the text with any row.
function similarity(image, text) {
  let best = -Infinity;
  for (let row = 0; row + text.length <= image.length; row += text.length) {
    let dot = 0;
    for (let i = 0; i < text.length; i++) dot += image[row + i] * text[i];
    best = Math.max(best, dot);
  }
  return best;
}

async function rank() {
  if (!imageUrl) { showError("Choose an image first."); $("file").focus(); return; }
  const captions = $("captions").value.split("\n").map((c) => c.trim()).filter((c) => c);
  if (captions.length === 0) { showError("Type at least one caption."); $("captions").focus(); return; }
  showError("");
  $("ranking").replaceChildren();
  $("rank").disabled = true;
  try {
    const body = { model: $("model").value, input: [{ type: "image_url", image_url: { url: imageUrl } }, ...captions] };
    const response = await fetch("/v1/embeddings", { method: "POST", headers: headers(true), body: JSON.stringify(body) });
    if (!response.ok) { showError(await errorOf(response)); return; }
    const data = (await response.json()).data.sort((a, b) => a.index - b.index);
    const image = data[0].embedding;
    const scored = captions.map((caption, i) => ({ caption, score: similarity(image, data[i + 1].embedding) }))
      .sort((a, b) => b.score - a.score);
    $("ranking").replaceChildren(...scored.map(({ caption, score }) => {
      const li = document.createElement("li");
      const text = document.createElement("span");
      text.className = "ranked-caption";
      text.textContent = caption;
      const value = document.createElement("span");
      value.className = "score";
      value.textContent = ` similarity ${score.toFixed(4)}`;
      li.append(text, value);
      return li;
    }));
  } catch (e) {
    showError(`The request failed: ${e.message}`);
  } finally {
    $("rank").disabled = false;
  }
}

function settings() {
  const body = {};
  const number = (id) => ($(id).value === "" ? null : Number($(id).value));
  const max = number("max-tokens"); if (max !== null) body.max_tokens = max;
  const temperature = number("temperature"); if (temperature !== null) body.temperature = temperature;
  const topP = number("top-p"); if (topP !== null) body.top_p = topP;
  const seed = number("seed"); if (seed !== null) body.seed = seed;
  const stop = $("stop-text").value; if (stop) body.stop = stop;
  return body;
}

async function generate(question) {
  if (!imageUrl) { showError("Choose an image first."); $("file").focus(); return; }
  const content = [{ type: "image_url", image_url: { url: imageUrl } }];
  if (question) content.push({ type: "text", text: question });
  await stream(content);
}

async function generateInterleaved() {
  const content = interleavedContent();
  if (!content.some((p) => p.type === "image_url")) { showError("Add an image part first."); $("part-file").focus(); return; }
  await stream(content);
}

// Streams a chat completion of one user message into the answer, then its statistics.
async function stream(content) {
  showError("");
  $("answer").textContent = "";
  $("stats").textContent = "";
  const body = { model: $("model").value, stream: true, stream_options: { include_usage: true }, messages: [{ role: "user", content }], ...settings() };
  running = new AbortController();
  setBusy(true);
  const start = performance.now();
  let first = null, finish = null, usage = null;
  try {
    const response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(true), body: JSON.stringify(body), signal: running.signal });
    if (!response.ok) { showError(await errorOf(response)); return; }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffered.indexOf("\n\n")) >= 0) {
        const event = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) { showError(chunk.error.message); continue; }
          const choice = chunk.choices?.[0];
          const text = choice?.delta?.content;
          if (text) { first ??= performance.now(); $("answer").textContent += text; }
          if (choice?.finish_reason) finish = choice.finish_reason;
          if (chunk.usage) usage = chunk.usage;
        }
      }
    }
    const seconds = (performance.now() - start) / 1000;
    const parts = [`finish: ${finish ?? "unknown"}`];
    if (usage) parts.push(`${usage.prompt_tokens} prompt tokens`, `${usage.completion_tokens} new tokens`);
    if (first !== null) parts.push(`first token after ${((first - start) / 1000).toFixed(2)} s`);
    if (usage && first !== null && usage.completion_tokens > 1) {
      const rate = (usage.completion_tokens - 1) / Math.max(1e-3, (performance.now() - first) / 1000);
      parts.push(`${rate.toFixed(1)} tokens/s`);
    }
    parts.push(`${seconds.toFixed(2)} s in all`);
    $("stats").textContent = parts.join(" · ");
  } catch (e) {
    if (e.name === "AbortError") $("stats").textContent = "stopped";
    else showError(`The request failed: ${e.message}`);
  } finally {
    running = null;
    setBusy(false);
  }
}

function setBusy(busy) {
  for (const id of ["caption", "ask", "generate"]) $(id).disabled = busy;
  for (const id of ["stop", "stop-interleaved"]) $(id).disabled = !busy;
}

document.addEventListener("DOMContentLoaded", () => {
  $("file").addEventListener("change", () => useFile($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); useFile(e.dataTransfer.files[0]); });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
  document.addEventListener("paste", (e) => {
    const item = [...(e.clipboardData?.items ?? [])].find((i) => i.type.startsWith("image/"));
    if (item) useFile(item.getAsFile());
  });
  $("caption").addEventListener("click", () => generate(""));
  $("ask").addEventListener("click", () => generate($("question").value.trim() || "What is in the picture?"));
  $("question").addEventListener("keydown", (e) => { if (e.key === "Enter") generate($("question").value.trim()); });
  $("stop").addEventListener("click", () => running?.abort());
  $("stop-interleaved").addEventListener("click", () => running?.abort());
  $("model").addEventListener("change", showView);
  $("part-file").addEventListener("change", () => { addImagePart($("part-file").files[0]); $("part-file").value = ""; });
  $("add-text").addEventListener("click", () => addTextPart(""));
  $("generate").addEventListener("click", generateInterleaved);
  $("rank").addEventListener("click", rank);
  $("api-key").addEventListener("change", loadModels);
  loadModels();
});
