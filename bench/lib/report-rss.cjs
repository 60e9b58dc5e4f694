// Preloaded into a benchmarked child (node --require): prints the process's own peak RSS on exit.
process.on("exit", () => {
  process.stdout.write(`peak-rss-kib ${process.resourceUsage().maxRSS}\n`);
});
