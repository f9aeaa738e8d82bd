/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The dashboard is served by the CL server from web/dist, possibly under a sub-path,
// so asset URLs are relative. `npm run dev` proxies /api to a running server.
export default defineConfig({
  base: "./",
  plugins: [react()],
  build: {
    outDir: "dist",
    sourcemap: false,
  },
  server: {
    proxy: {
      "/api": process.env.MODELCI_API ?? "http://127.0.0.1:8080",
    },
  },
  test: {
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
    pool: "threads",
    maxWorkers: 2,
    css: false,
    testTimeout: 30_000,
  },
});
