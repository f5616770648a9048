/* imapidled: command line, start-up and exit codes. Thin: the daemon lives in manager.c,
 * `check --connect` in probe.c. Nothing below main() calls exit(). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sysexits.h>

#include "config.h"
#include "log.h"
#include "manager.h"
#include "probe.h"

struct cli {
	const char *config_path;
	int verbosity; /* -q: -1, default 0, -v: 1, -vv: 2 */
	bool check;
	bool connect;
};

static void help(void)
{
	printf("Usage: imapidled [OPTIONS]\n"
	       "       imapidled check [--config FILE] [--connect]\n\n"
	       "Watch IMAP mailboxes with IDLE and turn new mail into events: a desktop\n"
	       "notification, a signed webhook, or a command run.\n\n"
	       "Options:\n"
	       "  -c, --config FILE   configuration file (default: $XDG_CONFIG_HOME/imapidled/config,\n"
	       "                      then /etc/imapidled/config)\n"
	       "  -v, --verbose       log more (-vv: debug, including the IMAP wire, secrets redacted)\n"
	       "  -q, --quiet         log warnings and errors only\n"
	       "      --foreground    accepted for compatibility: imapidled never forks\n"
	       "  -h, --help          show this help\n"
	       "  -V, --version       show the version\n\n"
	       "check: validate the configuration and fetch every secret; with --connect, also\n"
	       "log in to every account, report capabilities and mailboxes, and exit non-zero\n"
	       "on any failure.\n");
}

static int parse_args(int argc, char **argv, struct cli *cli)
{
	enum { OPT_FOREGROUND = 0x100, OPT_CONNECT };
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "foreground", no_argument, NULL, OPT_FOREGROUND },
		{ "connect", no_argument, NULL, OPT_CONNECT },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{},
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:vqhV", opts, NULL)) >= 0) {
		switch (c) {
		case 'c':
			cli->config_path = optarg;
			break;
		case 'v':
			cli->verbosity = MAX(cli->verbosity, 0) + 1;
			break;
		case 'q':
			cli->verbosity = -1;
			break;
		case OPT_FOREGROUND:
			break;
		case OPT_CONNECT:
			cli->connect = true;
			break;
		case 'h':
			help();
			return 0;
		case 'V':
			printf("imapidled %s\n", VERSION);
			return 0;
		default:
			return -EINVAL;
		}
	}
	for (int i = optind; i < argc; i++) {
		if (streq(argv[i], "check") && !cli->check) {
			cli->check = true;
			continue;
		}
		fprintf(stderr, "imapidled: unexpected argument \"%s\" (see --help)\n", argv[i]);
		return -EINVAL;
	}
	if (cli->connect && !cli->check) {
		fprintf(stderr, "imapidled: --connect only goes with \"check\"\n");
		return -EINVAL;
	}
	return 1;
}

static void apply_log_level(const struct cli *cli, const struct config *config)
{
	int level = config ? config->log_level : LOG_INFO;

	if (cli->verbosity < 0)
		level = LOG_WARNING;
	else if (cli->verbosity == 1)
		level = MAX(level, LOG_INFO);
	else if (cli->verbosity >= 2)
		level = LOG_DEBUG;
	log_set_level(level);
}

static int load_config(const struct cli *cli, struct config **ret)
{
	_cleanup_free_ char *path = NULL, *tried = NULL, *error = NULL;
	int r;

	r = config_find(cli->config_path, &path, &tried);
	if (r < 0) {
		_cleanup_free_ char *msg = NULL;
		if (asprintf(&msg, "no configuration file (looked for %s)", strna(tried)) < 0)
			return -ENOMEM;
		log_config_error(msg);
		return r;
	}
	r = config_parse(path, ret, &error);
	if (r < 0) {
		log_config_error(error ? error : strerror(-r));
		return r;
	}
	return 0;
}

/* Thousands of connections each need a descriptor; the soft limit of 1024 is a
 * historical select() artefact, so take the hard limit (systemd does the same). */
static void raise_nofile_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		log_debug_errno(errno, "Cannot raise RLIMIT_NOFILE: %m, ignoring");
}

static int run_check(const struct cli *cli, struct config *config)
{
	int r = manager_check_secrets(config);

	if (r < 0)
		return EX_CONFIG;
	if (!cli->connect) {
		printf("%s: configuration is valid (%zu account%s)\n", config->path,
		       config->n_accounts, config->n_accounts == 1 ? "" : "s");
		return EX_OK;
	}
	return probe_run(config);
}

int main(int argc, char **argv)
{
	_cleanup_config_free_ struct config *config = NULL;
	struct cli cli = {};
	int r;

	log_init();
	r = parse_args(argc, argv, &cli);
	if (r <= 0)
		return r < 0 ? EX_USAGE : EX_OK;
	apply_log_level(&cli, NULL);
	if (load_config(&cli, &config) < 0)
		return EX_CONFIG;
	apply_log_level(&cli, config);

	/* A peer closing a socket mid-write must be an error return, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	raise_nofile_limit();

	if (cli.check)
		return run_check(&cli, config);
	return manager_main(TAKE_PTR(config), cli.config_path);
}
