std = "luajit"
max_line_length = 120
files["lua/"] = { globals = { "ngx" } }
files["spec/"] = { std = "+busted", globals = { "ngx" } }
files["examples/"] = { globals = { "ngx" } }
files["bench/"] = { globals = { "ngx" } }
exclude_files = { "node_modules/", "build/" }
