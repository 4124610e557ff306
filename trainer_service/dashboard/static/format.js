// Small formatting and DOM helpers shared by the views (no markup from strings: text only).

/** An element with attributes and children (strings become text nodes). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "className") element.className = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function number(value, digits = 4) {
  if (value === undefined || value === null || Number.isNaN(value)) return "–";
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e5)) return value.toExponential(2);
  return Number(value.toPrecision(digits)).toString();
}

export function badge(text, kind = text) {
  return h("span", { className: `badge ${kind}` }, text);
}

/** "1 min 5 s" between two ISO instants (or until now while running). */
export function duration(start, end) {
  if (!start) return "–";
  const seconds = Math.max(0, ((end ? Date.parse(end) : Date.now()) - Date.parse(start)) / 1000);
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function when(iso) {
  if (!iso) return "–";
  return iso.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC");
}

export function jobLink(id) {
  return h("a", { href: `#/jobs/${encodeURIComponent(id)}`, className: "mono" }, id);
}

export function versionLink(modelName, version) {
  return h(
    "a",
    { href: `#/models?model=${encodeURIComponent(modelName)}&version=${version}` },
    `${modelName} v${version}`,
  );
}

export function notice(text, kind = "") {
  return h("p", { className: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}
