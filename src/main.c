/* imapidled: command line, start-up and exit codes. Thin: the daemon lives in manager.c. */
#include <getopt.h>
#include <stdio.h>
#include <sysexits.h>

#include "log.h"

static void help(void)
{
	printf("Usage: imapidled [OPTIONS]\n"
	       "       imapidled check [--config FILE] [--connect]\n\n"
	       "Watch IMAP mailboxes with IDLE and turn new mail into events.\n\n"
	       "  -c, --config FILE   configuration file\n"
	       "  -v, --verbose       log more (repeat for debug)\n"
	       "  -q, --quiet         log warnings and errors only\n"
	       "      --foreground    stay in the foreground (the default; for symmetry with\n"
	       "                      other daemons: imapidled never forks)\n"
	       "  -h, --help          show this help\n"
	       "  -V, --version       show the version\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{},
	};
	int c;

	log_init();
	while ((c = getopt_long(argc, argv, "hV", opts, NULL)) >= 0) {
		switch (c) {
		case 'h':
			help();
			return EX_OK;
		case 'V':
			printf("imapidled %s\n", VERSION);
			return EX_OK;
		default:
			return EX_USAGE;
		}
	}
	log_error("not implemented yet");
	return EX_SOFTWARE;
}
