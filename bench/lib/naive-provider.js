// Runtime entry of the naive benchmark's dynamic provider (bench/fixtures/naive-program): loaded
// lazily inside the provider process, so nothing heavy is serialized into the state.
"use strict";
require("tsx/cjs/api").register();
module.exports = require("./naive-provider-impl.ts");
