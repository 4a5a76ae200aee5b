// Reads /api/initialize (tokens as {text, index, is_selectable}, prompt, image_url) and posts
// {word, word_index, layer, head, threshold} to /api/generate_attention_map, then draws
// heatmap (base64 PNG, heatmap_width x heatmap_height) over the picture and shows stats {min, max}.
window.__requests = 0;
async function generate(token) {
  const body = {
    word: token.text,
    word_index: token.index,
    layer: Number(document.getElementById("layer").value),
    head: Number(document.getElementById("head").value),
    threshold: Number(document.getElementById("threshold").value),
  };
  const response = await fetch("/api/generate_attention_map", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await response.json();
  window.__requests += 1;
  if (!data.success) {
    document.getElementById("error").textContent = data.error;
    return;
  }
  const heatmap = document.getElementById("heatmap");
  heatmap.width = data.heatmap_width;
  heatmap.height = data.heatmap_height;
  heatmap.src = "data:image/png;base64," + data.heatmap;
  document.getElementById("stats").textContent = `min ${data.stats.min} max ${data.stats.max}`;
  window.__last = { request: body, response: data };
}

async function start() {
  const data = await (await fetch("/api/initialize")).json();
  document.getElementById("prompt").textContent = data.prompt;
  document.getElementById("picture").src = data.image_url;
  const strip = document.getElementById("tokens");
  for (const token of data.tokens) {
    const span = document.createElement("span");
    span.className = token.is_selectable ? "tok selectable" : "tok";
    span.dataset.index = token.index;
    span.textContent = token.text;
    if (token.is_selectable) span.addEventListener("click", () => generate(token));
    strip.appendChild(span);
  }
  window.__ready = true;
}
start();
