// The playground: every request goes to this server's public /v1 API, as any client's would.
const $ = (id) => document.getElementById(id);
let imageUrl = null;
let running = null;

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
    select.replaceChildren(...body.data.map((m) => new Option(m.id, m.id)));
    showError("");
  } catch (e) {
    showError(`The server could not be reached: ${e.message}`);
  }
}

function useFile(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    imageUrl = reader.result;
    const img = $("thumbnail");
    img.onload = () => { $("image-size").textContent = `${file.name}: ${img.naturalWidth} × ${img.naturalHeight} pixels, ${(file.size / 1024).toFixed(1)} KiB`; };
    img.onerror = () => { $("image-size").textContent = `${file.name}: ${(file.size / 1024).toFixed(1)} KiB (the browser cannot show it; the server will say whether it reads it)`; };
    img.src = imageUrl;
    $("preview").hidden = false;
  };
  reader.readAsDataURL(file);
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
  showError("");
  $("answer").textContent = "";
  $("stats").textContent = "";
  const content = [{ type: "image_url", image_url: { url: imageUrl } }];
  if (question) content.push({ type: "text", text: question });
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
  $("caption").disabled = busy;
  $("ask").disabled = busy;
  $("stop").disabled = !busy;
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
  $("api-key").addEventListener("change", loadModels);
  loadModels();
});
