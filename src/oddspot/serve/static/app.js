/* oddspot inspection page: pick or drop images, see verdict, score vs threshold, heatmap and mask.
   Talks to this service only (same origin); keeps the session's results in sessionStorage. */
(function () {
  'use strict';
  var HISTORY_KEY = 'oddspot-history';
  var TOKEN_KEY = 'oddspot-token';
  var MAX_HISTORY = 500;
  var models = {};
  var el = function (id) { return document.getElementById(id); };

  function make(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function fmt(x) {
    if (x === null || x === undefined) return '\u2013';
    var a = Math.abs(x);
    return (a !== 0 && (a < 1e-3 || a >= 1e5)) ? x.toExponential(3) : x.toPrecision(5).replace(/\.?0+$/, '');
  }

  function headers() {
    var token = sessionStorage.getItem(TOKEN_KEY);
    return token ? {Authorization: 'Bearer ' + token} : {};
  }

  function setStatus(text, isError) {
    var s = el('status');
    s.textContent = text;
    s.className = isError ? 'error' : 'muted';
  }

  async function errorText(res) {
    try { var body = await res.json(); return body.error || res.statusText; } catch (e) { return res.status + ' ' + res.statusText; }
  }

  async function loadModels() {
    var res = await fetch('/v1/models', {headers: headers()});
    if (res.status === 401) {
      el('token-box').hidden = false;
      setStatus('This service needs a bearer token: enter it above.', true);
      return;
    }
    if (!res.ok) { setStatus('Cannot list models: ' + await errorText(res), true); return; }
    var list = (await res.json()).models;
    var select = el('model');
    select.textContent = '';
    models = {};
    list.forEach(function (m) {
      models[m.name] = m;
      var option = make('option', null, m.name + ' (' + m.task + ', ' + m.kind + ')');
      option.value = m.name;
      select.appendChild(option);
    });
    showModel();
    setStatus(list.length + ' model' + (list.length === 1 ? '' : 's') + ' loaded. Drop images to inspect them.');
  }

  function showModel() {
    var m = models[el('model').value];
    if (!m) { el('model-info').textContent = ''; return; }
    var t = m.thresholds;
    el('model-info').textContent = 'version ' + m.version + ' \u00b7 runtime ' + m.runtime +
      (m.input_size ? ' \u00b7 input ' + m.input_size.join('\u00d7') : '') +
      (t.image === null ? ' \u00b7 not calibrated (no verdicts)' : ' \u00b7 image threshold ' + fmt(t.image));
  }

  function figure(caption, cls, src) {
    var f = make('figure');
    var img = make('img', cls);
    img.alt = caption;
    img.src = src;
    f.appendChild(img);
    f.appendChild(make('figcaption', null, caption));
    return f;
  }

  function scoreBar(r) {
    var bar = make('div', 'scorebar ' + (r.decision || ''));
    var fill = make('div', 'fill');
    fill.style.width = (100 * Math.max(0, Math.min(1, r.normalized))) + '%';
    var mark = make('div', 'mark');
    mark.style.left = '50%';
    mark.title = 'threshold';
    bar.appendChild(fill);
    bar.appendChild(mark);
    return bar;
  }

  function render(card, file, body, r) {
    card.dataset.score = String(r.score);
    var info = card.querySelector('.info');
    var title = info.querySelector('h3');
    var verdictText = r.decision === null ? 'no verdict' : r.decision;
    var verdict = make('span', 'verdict ' + (r.decision || 'none'), verdictText);
    title.insertBefore(verdict, title.firstChild);
    var t = body.thresholds;
    var line = 'score ' + fmt(r.score) + (t.image === null ? ' (model not calibrated)' :
      ' vs threshold ' + fmt(t.image) + ' \u00b7 normalized ' + fmt(r.normalized) + ' vs 0.5');
    info.appendChild(make('p', 'score', line));
    if (r.normalized !== null) info.appendChild(scoreBar(r));
    if (r.summary) info.appendChild(make('p', 'muted', 'flagged pixels ' + r.summary.flagged_pixels +
      ' (' + fmt(100 * r.summary.flagged_fraction) + '%) at ' + r.summary.score_name + ' \u2265 ' + fmt(r.summary.pixel_threshold)));
    info.appendChild(make('p', 'muted', r.width + '\u00d7' + r.height + ' px \u00b7 model ' + body.model + ' ' + body.version +
      ' on ' + body.runtime + ' \u00b7 ' + fmt(r.timing_ms.inference) + ' ms in a batch of ' + r.timing_ms.batch_size +
      ' \u00b7 ' + fmt(body.timing_ms.total) + ' ms in all'));
    var figs = make('div', 'figures');
    figs.appendChild(figure('image', 'original', URL.createObjectURL(file)));
    if (r.heatmap) figs.appendChild(figure('heatmap overlay', 'heatmap', 'data:image/png;base64,' + r.heatmap));
    if (r.mask) figs.appendChild(figure('predicted mask', 'mask', 'data:image/png;base64,' + r.mask));
    else figs.appendChild(make('p', 'muted', 'no predicted mask (the model has no pixel threshold)'));
    card.appendChild(figs);
    addHistory({time: new Date().toLocaleTimeString(), image: file.name, model: body.model + ' ' + body.version,
                score: r.score, threshold: t.image, normalized: r.normalized, verdict: verdictText});
  }

  async function inspect(file) {
    var name = el('model').value;
    var card = make('article', 'result');
    card.dataset.state = 'pending';
    var info = make('div', 'info');
    var title = make('h3');
    title.appendChild(make('span', 'name', file.name));
    info.appendChild(title);
    card.appendChild(info);
    el('results').insertBefore(card, el('results').firstChild);
    if (!name) { info.appendChild(make('p', 'error', 'no model loaded')); card.dataset.state = 'error'; return; }
    var form = new FormData();
    form.append('image', file, file.name);
    try {
      var res = await fetch('/v1/models/' + encodeURIComponent(name) + '/predict?outputs=heatmap,mask',
                            {method: 'POST', body: form, headers: headers()});
      if (!res.ok) throw new Error(res.status + ': ' + await errorText(res));
      var body = await res.json();
      var r = body.results[0];
      if (r.error) throw new Error(r.status + ': ' + r.error);
      render(card, file, body, r);
      card.dataset.state = 'done';
    } catch (e) {
      info.appendChild(make('p', 'error', String(e.message || e)));
      card.dataset.state = 'error';
    }
  }

  async function inspectAll(files) {
    var list = Array.prototype.slice.call(files);
    for (var i = 0; i < list.length; i++) {
      setStatus('Scoring ' + (i + 1) + ' of ' + list.length + '\u2026');
      await inspect(list[i]);
    }
    setStatus(list.length + ' image' + (list.length === 1 ? '' : 's') + ' scored.');
  }

  function readHistory() {
    try { return JSON.parse(sessionStorage.getItem(HISTORY_KEY) || '[]'); } catch (e) { return []; }
  }

  function drawHistory() {
    var body = el('history').tBodies[0];
    body.textContent = '';
    readHistory().forEach(function (h) {
      var row = make('tr', h.verdict);
      [h.time, h.image, h.model].forEach(function (v) { row.appendChild(make('td', null, v)); });
      [h.score, h.threshold, h.normalized].forEach(function (v) { row.appendChild(make('td', 'num', fmt(v))); });
      row.appendChild(make('td', null, h.verdict));
      body.appendChild(row);
    });
  }

  function addHistory(entry) {
    var rows = readHistory();
    rows.unshift(entry);
    sessionStorage.setItem(HISTORY_KEY, JSON.stringify(rows.slice(0, MAX_HISTORY)));
    drawHistory();
  }

  function setUp() {
    var drop = el('drop');
    ['dragenter', 'dragover'].forEach(function (type) {
      drop.addEventListener(type, function (e) { e.preventDefault(); drop.classList.add('over'); });
    });
    ['dragleave', 'drop'].forEach(function (type) {
      drop.addEventListener(type, function (e) { e.preventDefault(); drop.classList.remove('over'); });
    });
    drop.addEventListener('drop', function (e) { if (e.dataTransfer && e.dataTransfer.files.length) inspectAll(e.dataTransfer.files); });
    el('file-input').addEventListener('change', function (e) {
      var files = e.target.files;
      if (files && files.length) inspectAll(files).then(function () { e.target.value = ''; });
    });
    el('model').addEventListener('change', showModel);
    el('token-save').addEventListener('click', function () {
      sessionStorage.setItem(TOKEN_KEY, el('token').value.trim());
      el('token-box').hidden = true;
      loadModels();
    });
    el('history-clear').addEventListener('click', function () { sessionStorage.removeItem(HISTORY_KEY); drawHistory(); });
    drawHistory();
    loadModels().catch(function (e) { setStatus('Cannot reach the service: ' + e.message, true); });
  }

  document.addEventListener('DOMContentLoaded', setUp);
}());
