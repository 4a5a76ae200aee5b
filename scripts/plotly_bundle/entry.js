'use strict';
// plotly.js with only the trace types the attnstore explorer draws (heatmap, bar, scatter).
var Plotly = require('plotly.js/lib/core');
Plotly.register([require('plotly.js/lib/heatmap'), require('plotly.js/lib/bar'), require('plotly.js/lib/scatter')]);
module.exports = Plotly;
