std = "luajit"
max_line_length = 120
files["lua/"] = { read_globals = { "ngx" } }
files["spec/"] = { std = "+busted", read_globals = { "ngx" } }
files["examples/"] = { read_globals = { "ngx" } }
files["bench/"] = { read_globals = { "ngx" } }
exclude_files = { "node_modules/", "build/" }
