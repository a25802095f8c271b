/* gastroscreen slide viewer (served at /view/<slide id>; daemon/service/viewer).
 *
 * The slide is a Deep Zoom image (/slides/<id>/slide.dzi and slide_files/<level>/<col>_<row>.jpeg,
 * stages/slide/deepzoom) shown with Leaflet's L.CRS.Simple: one map unit is one pixel of the
 * full-resolution level, whose (0, 0) is the corner of openslide.bounds-* when the slide has
 * them. The report's GeoJSON (regions.geojson) and overlays (report.json "overlays") are in the
 * same coordinates, so they are drawn as they are.
 *
 * Leaflet zoom z shows Deep Zoom level maxLevel + z at one screen pixel per level pixel (z <= 0;
 * up to 2 more levels are enlarged). Deep Zoom tiles overlap their neighbours by `overlap`
 * pixels, so each tile image is drawn at its own size, shifted back by the overlap.
 *
 * URL parameters, for people and for the headless browser test: at=X,Y,ZOOM centres on a
 * place (below); hide=heatmap,regions,focus,background (comma-separated) clicks those layers'
 * checkboxes off once the first tiles have loaded, show=... clicks them on; opacity=0..100 sets
 * the heat map's opacity. When the page has loaded its tiles and layers it sets data-ready="1"
 * on <body>.
 */
(function () {
  "use strict";

  var id = location.pathname.split("/").filter(Boolean).pop();
  var base = "/slides/" + encodeURIComponent(id) + "/";
  var params = new URLSearchParams(location.search);

  function $(sel) { return document.getElementById(sel); }

  function showError(text) {
    var e = $("error");
    e.textContent = text;
    e.hidden = false;
  }

  function getText(url) {
    return fetch(url, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok) throw new Error(url + ": HTTP " + r.status);
      return r.text();
    });
  }

  function getJSON(url) {
    return getText(url).then(JSON.parse);
  }

  function fixed(v, digits) {
    return typeof v === "number" ? v.toFixed(digits) : "—";
  }

  /* The header and the report panel; every value goes in as text, never as markup. */
  function showReport(r) {
    var slide = r.slide || {};
    var name = (slide.path || id).split("/").pop();
    document.title = name + " — gastroscreen viewer";
    $("slide-name").textContent = name;
    var v = $("verdict");
    v.textContent = r.verdict || "";
    v.className = "verdict " + (r.verdict || "");
    $("figures").textContent = "score " + fixed(r.score, 3) + " · threshold " + fixed(r.threshold, 3) +
      (r.reason ? " · " + r.reason : "");
    $("untrained").hidden = !r.untrained;
    if (r.untrained && r.notice) $("untrained").textContent = r.notice;
    var facts = $("facts");
    var rows = [
      ["slide id", slide.id],
      ["external id", slide.external_id],
      ["size", slide.width && slide.height ? slide.width + " × " + slide.height + " px" : null],
      ["µm/px", slide.mpp ? slide.mpp + (slide.mpp_defaulted ? " (assumed)" : "") : null],
      ["vendor", slide.vendor],
      ["tiles", r.tiles ? r.tiles.inferred + " inferred, " + r.tiles.background + " background, " +
        r.tiles.blurry + " out of focus" : null],
      ["decided", r.decided_unix_ms ? new Date(r.decided_unix_ms).toISOString() : null]
    ];
    rows.forEach(function (row) {
      if (row[1] === null || row[1] === undefined) return;
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = row[0];
      dd.textContent = String(row[1]);
      facts.appendChild(dt);
      facts.appendChild(dd);
    });
    var ul = $("warnings");
    if (r.warnings && r.warnings.length) {
      ul.textContent = "";
      r.warnings.forEach(function (w) {
        var li = document.createElement("li");
        li.textContent = w;
        ul.appendChild(li);
      });
    }
    $("file-report").href = base + "report.json";
    $("file-regions").href = base + "regions.geojson";
    $("file-tiles").href = base + "tiles.geojson.gz";
  }

  function parseDzi(xml) {
    var doc = new DOMParser().parseFromString(xml, "application/xml");
    var img = doc.getElementsByTagName("Image")[0], size = doc.getElementsByTagName("Size")[0];
    if (!img || !size) throw new Error("slide.dzi: not a Deep Zoom image");
    return {
      tile: parseInt(img.getAttribute("TileSize"), 10),
      overlap: parseInt(img.getAttribute("Overlap"), 10),
      format: img.getAttribute("Format"),
      width: parseInt(size.getAttribute("Width"), 10),
      height: parseInt(size.getAttribute("Height"), 10)
    };
  }

  /* A Deep Zoom pyramid as a Leaflet tile layer. */
  var DeepZoomLayer = L.TileLayer.extend({
    initialize: function (dzi, maxLevel, options) {
      this._dzi = dzi;
      L.TileLayer.prototype.initialize.call(this, "", options);
      this.options.zoomOffset = maxLevel;
    },
    getTileUrl: function (coords) {
      return base + "slide_files/" + this._getZoomForUrl() + "/" + coords.x + "_" + coords.y + "." +
        this._dzi.format;
    },
    createTile: function (coords, done) {
      var img = document.createElement("img");
      var ov = this._dzi.overlap;
      img.alt = "";
      img.setAttribute("role", "presentation");
      L.DomEvent.on(img, "load", function () {
        /* Drawn at its own size (tile + overlap), moved back by the leading overlap. */
        img.style.width = img.naturalWidth + "px";
        img.style.height = img.naturalHeight + "px";
        img.style.marginLeft = coords.x > 0 ? -ov + "px" : "0";
        img.style.marginTop = coords.y > 0 ? -ov + "px" : "0";
        done(null, img);
      });
      L.DomEvent.on(img, "error", function (e) { done(e, img); });
      img.src = this.getTileUrl(coords);
      return img;
    }
  });

  var map, pixel;

  function levelsOf(w, h) {
    var n = 1;
    while (w > 1 || h > 1) {
      w = Math.max(1, Math.ceil(w / 2));
      h = Math.max(1, Math.ceil(h / 2));
      n++;
    }
    return n;
  }

  function start(dzi, report) {
    var maxLevel = levelsOf(dzi.width, dzi.height) - 1;
    map = L.map("map", {
      crs: L.CRS.Simple,
      minZoom: -maxLevel,
      maxZoom: 2,
      zoomSnap: 1,
      attributionControl: false
    });
    /* Full-resolution pixel (x, y) -> LatLng: zoom 0 is one screen pixel per slide pixel. */
    pixel = function (x, y) { return map.unproject([x, y], 0); };
    var bounds = L.latLngBounds(pixel(0, dzi.height), pixel(dzi.width, 0));
    var tiles = new DeepZoomLayer(dzi, maxLevel, {
      tileSize: dzi.tile,
      minZoom: -maxLevel, /* GridLayer's default minZoom 0 would hide every zoomed-out level */
      maxZoom: 2,
      maxNativeZoom: 0,
      minNativeZoom: -maxLevel,
      bounds: bounds,
      noWrap: true,
      keepBuffer: 4
    }).addTo(map);
    map.fitBounds(bounds);
    /* ?at=X,Y,ZOOM: centre on full-resolution pixel (X, Y) at Leaflet zoom ZOOM (0 = one screen
     * pixel per slide pixel), so a place on the slide can be linked. */
    var at = /^(\d+),(\d+),(-?\d+)$/.exec(params.get("at") || "");
    if (at) map.setView(pixel(+at[1], +at[2]), Math.max(-maxLevel, Math.min(2, +at[3])));
    map.setMaxBounds(bounds.pad(0.5));
    var layers = buildLayers(report);
    var firstLoad = true;
    tiles.on("load", function () {
      if (!firstLoad) return;
      firstLoad = false;
      layers.then(function () {
        applyUrlToggles();
        document.body.setAttribute("data-ready", "1");
      });
    });
  }

  var groups = {};

  function bindToggle(name, layer) {
    groups[name] = layer;
    var box = $("layer-" + name);
    box.disabled = false;
    if (box.checked) layer.addTo(map);
    box.addEventListener("change", function () {
      if (box.checked) layer.addTo(map); else map.removeLayer(layer);
    });
  }

  function disable(name, why) {
    var box = $("layer-" + name);
    box.checked = false;
    box.disabled = true;
    box.parentNode.title = why;
  }

  /* An overlay PNG of one pixel per heat-map cell, in report.json "overlays" geometry. */
  function cellOverlay(ov, file, opacity) {
    var x0 = -ov.origin_level0[0], y0 = -ov.origin_level0[1];
    var x1 = x0 + ov.size[0] * ov.cell_level0, y1 = y0 + ov.size[1] * ov.cell_level0;
    return L.imageOverlay(base + file, L.latLngBounds(pixel(x0, y1), pixel(x1, y0)), {
      opacity: opacity,
      className: "cells",
      interactive: false
    });
  }

  function buildLayers(report) {
    var ov = report.overlays;
    if (ov && ov.heatmap) {
      var heat = cellOverlay(ov, ov.heatmap, 0.5);
      var slider = $("heatmap-opacity");
      var o = parseInt(params.get("opacity"), 10);
      if (o >= 0 && o <= 100) slider.value = String(o);
      heat.setOpacity(slider.value / 100);
      slider.addEventListener("input", function () { heat.setOpacity(slider.value / 100); });
      bindToggle("heatmap", heat);
    } else {
      disable("heatmap", "no heat map in this report");
      $("heatmap-opacity").disabled = true;
    }
    if (ov && ov.background) bindToggle("background", cellOverlay(ov, ov.background, 0.45));
    else disable("background", "no background layer in this report");

    if (!report.regions) {
      disable("regions", "no regions file");
      disable("focus", "no regions file");
      return Promise.resolve();
    }
    return getJSON(base + "regions.geojson").then(function (fc) {
      var toLatLng = function (c) { return pixel(c[0], c[1]); };
      var isFocus = function (f) {
        var cl = f.properties && f.properties.classification;
        return cl && cl.name === "Out of focus";
      };
      var popup = function (f, layer) {
        var p = f.properties || {}, lines = [p.name || ""];
        var m = p.measurements || {};
        Object.keys(m).forEach(function (k) {
          lines.push(k.replace(/^gastroscreen: /, "") + ": " + (+m[k]).toPrecision(4));
        });
        var div = document.createElement("div");
        lines.forEach(function (t) {
          var line = document.createElement("div");
          line.textContent = t;
          div.appendChild(line);
        });
        layer.bindPopup(div);
      };
      var regions = L.geoJSON(fc, {
        filter: function (f) { return !isFocus(f); },
        coordsToLatLng: toLatLng,
        style: { color: "#e00000", weight: 2, fill: false },
        onEachFeature: popup
      });
      var focus = L.geoJSON(fc, {
        filter: isFocus,
        coordsToLatLng: toLatLng,
        style: { color: "#a020f0", weight: 1.5, dashArray: "4 3", fillOpacity: 0.12 },
        onEachFeature: popup
      });
      $("count-regions").textContent = "(" + regions.getLayers().length + ")";
      $("count-focus").textContent = "(" + focus.getLayers().length + ")";
      bindToggle("regions", regions);
      bindToggle("focus", focus);
    }).catch(function (e) { showError(String(e.message || e)); });
  }

  function applyUrlToggles() {
    [["hide", true], ["show", false]].forEach(function (p) {
      (params.get(p[0]) || "").split(",").filter(Boolean).forEach(function (name) {
        var box = $("layer-" + name);
        if (box && box.checked === p[1] && !box.disabled) box.click();
      });
    });
  }

  Promise.all([getJSON(base + "report.json"), getText(base + "slide.dzi")])
    .then(function (got) {
      showReport(got[0]);
      start(parseDzi(got[1]), got[0]);
    })
    .catch(function (e) {
      $("slide-name").textContent = id;
      showError("cannot show this slide: " + (e.message || e));
      document.body.setAttribute("data-ready", "1");
    });
})();
