#include "agent/app.h"

int main(int argc, char** argv) { return qcs::agent::runMain(argc, argv); }
