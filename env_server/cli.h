// `distil-env serve`: the feedback HTTP server.
#pragma once
#include <CLI/CLI.hpp>
namespace distil::env {
void add_serve_command(CLI::App& app, int& exit_code);
}  // namespace distil::env
